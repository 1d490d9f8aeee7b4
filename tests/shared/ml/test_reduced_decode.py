"""Large images decoded at reduced size (``PreprocessOptions.reduce_large``): what the model
sees barely changes, the memory of decoding drops to a fraction, and versions recorded
without it keep their full-size decode."""

from __future__ import annotations

import io
import math
import platform
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.ml.dicom import decode_dicom
from shared.ml.preprocessing import (
    MAX_SIDE,
    PreprocessOptions,
    decode_image,
    load_pixels,
    preprocessing_id,
    reduce_factors,
)
from tests.helpers.dicom import make_dicom
from tests.helpers.env import sample_files
from tests.helpers.memory import decode_peak_growth_mib

REDUCED = PreprocessOptions(reduce_large=True)


def _encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _large_radiograph(radiography_root: Path, side: int) -> Image.Image:
    """A real film upscaled to ``side`` px, so that reduction has real structure to keep."""
    path = sample_files(radiography_root, 1)["COVID"][0]
    with Image.open(path) as film:
        return film.convert("L").resize((side, side * 5 // 4), Image.Resampling.BICUBIC)


def test_the_floor_keeps_three_times_the_model_input_after_the_crop() -> None:
    assert PreprocessOptions().decode_floor(224) == 0
    assert REDUCED.decode_floor(224) == 672
    assert PreprocessOptions(reduce_large=True, crop_border=0.1).decode_floor(224) == 840
    # equalization sees at least 1024 px
    assert PreprocessOptions(reduce_large=True, equalize="clahe").decode_floor(64) == 1024
    with pytest.raises(ValueError, match="reduce_large"):
        PreprocessOptions(reduce_large=1)  # type: ignore[arg-type]


def test_the_reduction_is_named_in_the_preprocessing_id_and_absent_from_old_records() -> None:
    assert preprocessing_id(REDUCED) == preprocessing_id(PreprocessOptions()) + "+reduce3"
    # what versions recorded before the option say: full-size decoding
    assert PreprocessOptions.from_dict({"equalize": "none", "crop_border": 0.0}) == \
        PreprocessOptions()
    assert PreprocessOptions.from_dict(REDUCED.as_dict()) == REDUCED


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_large_image_is_decoded_between_the_floor_and_twice_it(
        fmt: str, radiography_root: Path) -> None:
    data = _encoded(_large_radiograph(radiography_root, 2400), fmt)
    floor = REDUCED.decode_floor(64)
    full = decode_image(data)
    reduced = decode_image(data, floor=floor)
    assert full.gray.shape == (3000, 2400)
    assert floor <= min(reduced.gray.shape) < 2 * floor, reduced.gray.shape
    aspect = full.gray.shape[0] / full.gray.shape[1]
    assert reduced.gray.shape[0] / reduced.gray.shape[1] == pytest.approx(aspect, rel=0.02)
    # a small image is left as it is
    small = _encoded(Image.new("L", (200, 300), 77), fmt)
    assert decode_image(small, floor=floor).gray.shape == (300, 200)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize(("size", "options", "mean", "p99"), [
    (224, REDUCED, 0.5, 2.0),
    (64, PreprocessOptions(reduce_large=True, crop_border=0.05), 1.0, 6.0),
    (64, PreprocessOptions(reduce_large=True, equalize="clahe"), 2.0, 5.0),
    (224, PreprocessOptions(reduce_large=True, equalize="histogram"), 1.0, 4.0),
], ids=["224", "64-crop", "64-clahe", "224-histogram"])
def test_the_model_sees_nearly_the_same_pixels(fmt: str, size: int, options: PreprocessOptions,
                                               mean: float, p99: float,
                                               radiography_root: Path) -> None:
    data = _encoded(_large_radiograph(radiography_root, 2400), fmt, quality=95)
    full_options = PreprocessOptions(**{**options.as_dict(), "reduce_large": False})
    full = load_pixels(data, size, options=full_options)
    reduced = load_pixels(data, size, options=options)
    difference = np.abs(full - reduced)
    # on 0..255: about a grey level on average at most, a few at the sharpest edges
    assert difference.mean() < mean, difference.mean()
    assert np.percentile(difference, 99) < p99, np.percentile(difference, 99)


def test_sixteen_bit_and_dicom_images_are_reduced_with_their_range_kept() -> None:
    ramp = np.tile(np.linspace(1000, 4000, 2000).round(), (1600, 1)).astype(np.uint16)
    png = _encoded(Image.fromarray(ramp), "PNG")
    reduced = decode_image(png, floor=400).gray
    assert min(reduced.shape) == 400 and reduced.dtype == np.float32
    assert reduced.min() == 0.0 and reduced.max() == pytest.approx(255.0, abs=0.5)
    dicom = make_dicom(ramp, 12)
    full = decode_dicom(dicom, 10**8)
    small = decode_image(dicom, floor=400).gray
    assert min(small.shape) == 400
    assert small.mean() == pytest.approx(full.mean(), abs=0.5)


def test_colour_is_still_measured_on_a_reduced_image(radiography_root: Path) -> None:
    grey = _large_radiograph(radiography_root, 1600)
    tinted = Image.merge("RGB", (grey, grey.point(lambda v: v // 2), grey))
    for fmt in ("PNG", "JPEG"):
        data = _encoded(tinted, fmt)
        assert decode_image(data, floor=128).colourfulness == pytest.approx(
            decode_image(data).colourfulness, rel=0.1, abs=1.0)


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/status")
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_reduced_decode_takes_a_fraction_of_the_memory(fmt: str) -> None:
    float_copy = math.ceil(7000 * 7000 * 4 / 2**20)  # 187 MiB
    full = decode_peak_growth_mib(fmt, reduce=False)
    reduced = decode_peak_growth_mib(fmt, reduce=True)
    assert full > float_copy, full
    # PNG: one 8-bit copy (47 MiB) and the small rest; JPEG: decoded at 1/8 scale
    assert reduced < float_copy / 3, (reduced, full)


# -- extreme aspect ratios: a side longer than MAX_SIDE is reduced, whatever the floor ------
def test_only_a_side_longer_than_max_side_is_reduced() -> None:
    assert MAX_SIDE == 8192
    assert reduce_factors(3000, 2400) == (1, 1)  # a radiograph: untouched
    assert reduce_factors(3000, 2400, floor=672) == (3, 3)
    assert reduce_factors(1, 50_000_000) == (6104, 1)
    assert reduce_factors(50_000_000, 1, floor=672) == (1, 6104)
    # along a long side, whichever factor is larger
    assert reduce_factors(2000, 20_000, floor=672, max_side=8192) == (3, 2)
    assert reduce_factors(2000, 20_000, floor=200, max_side=8192) == (10, 10)


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16"])
@pytest.mark.parametrize("size", [(1000, 3), (3, 1000), (1000, 1)], ids=str)
def test_a_long_side_is_box_reduced_before_the_image_becomes_float(
        mode: str, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    top = 65535 if mode == "I;16" else 255
    values = rng.integers(0, top, size[::-1]).astype(np.uint16 if mode == "I;16" else np.uint8)
    image = Image.fromarray(values) if mode != "RGB" else Image.merge(
        "RGB", [Image.fromarray(values)] * 3)
    factors = (-(-size[0] // 64), -(-size[1] // 64))
    gray = decode_image(_encoded(image, "PNG"), max_side=64).gray
    assert gray.shape == (-(-size[1] // factors[1]), -(-size[0] // factors[0]))
    wide = image.convert("I") if mode == "I;16" else image.convert("L")
    if mode == "RGB":  # reduced in colour, then made gray
        wide = image.reduce(factors).convert("L")
    else:
        wide = wide.reduce(factors)
    expected = np.asarray(wide, np.float64)
    if mode == "I;16":
        expected = (expected - expected.min()) * (255.0 / (expected.max() - expected.min()))
    np.testing.assert_array_equal(gray, expected.astype(np.float32))
    # the default leaves an ordinary image as it is
    assert decode_image(_encoded(image, "PNG")).gray.shape == size[::-1]


def test_a_long_dicom_is_reduced_like_the_whole_image() -> None:
    stored = np.random.default_rng(4).integers(0, 4096, (5, 700)).astype(np.uint16)
    data = make_dicom(stored, 12, "MONOCHROME1")
    full = decode_dicom(data, 10**8)
    reduced = decode_image(data, max_side=64).gray  # 700 / 64: by 11 along x
    expected = np.asarray(Image.fromarray(full).reduce((11, 1)), np.float32)
    np.testing.assert_array_equal(reduced, expected)
    assert reduced.shape == (5, 64)
    # with a floor too, the larger factor per axis: 5 // 2 = 2 along y
    both = decode_image(data, floor=2, max_side=64).gray
    np.testing.assert_array_equal(
        both, np.asarray(Image.fromarray(full).reduce((11, 2)), np.float32))
