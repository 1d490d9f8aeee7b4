"""Preprocessing options against source shortcuts: border crop, histogram equalization, CLAHE."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.ml.preprocessing import (
    PREPROCESSING_ID,
    PreprocessOptions,
    decode_grayscale,
    gray_to_pixels,
    load_pixels,
    prepare_gray,
    preprocessing_id,
    resize_to_rgb,
)
from tests.helpers.env import sample_files

CROP = PreprocessOptions(crop_border=0.05)
HISTOGRAM = PreprocessOptions(equalize="histogram")
CLAHE = PreprocessOptions(equalize="clahe")
ALL = PreprocessOptions(equalize="clahe", crop_border=0.05, clahe_clip_limit=0.02)


def _real_files(root: Path, per_class: int) -> list[Path]:
    return [path for files in sample_files(root, per_class).values() for path in files]


def _png(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def _local_contrast(gray: np.ndarray, block: int = 16) -> float:
    """Mean standard deviation over block x block tiles: the contrast CLAHE works on."""
    h, w = (n - n % block for n in gray.shape)
    tiles = gray[:h, :w].reshape(h // block, block, w // block, block)
    return float(tiles.std(axis=(1, 3)).mean())


# -- default options change nothing ------------------------------------------------------------
def test_default_options_leave_load_pixels_as_before(radiography_root: Path) -> None:
    for path in _real_files(radiography_root, 2):
        data = path.read_bytes()
        before = resize_to_rgb(decode_grayscale(data), 224)  # the path without options
        np.testing.assert_array_equal(load_pixels(data, 224), before)
        np.testing.assert_array_equal(load_pixels(data, 224, options=PreprocessOptions()), before)


def test_default_prepare_gray_returns_the_same_values(radiography_root: Path) -> None:
    gray = decode_grayscale(_real_files(radiography_root, 1)[0].read_bytes())
    prepared = prepare_gray(gray, PreprocessOptions())
    assert prepared.dtype == np.float32
    np.testing.assert_array_equal(prepared, gray)


# -- border crop -------------------------------------------------------------------------------
def test_crop_removes_a_bright_frame(radiography_root: Path) -> None:
    gray = decode_grayscale(_real_files(radiography_root, 1)[0].read_bytes())
    assert gray.shape == (256, 256)
    framed = gray.copy()
    framed[:10, :] = framed[-10:, :] = framed[:, :10] = framed[:, -10:] = 255.0
    plain, marked = _png(gray), _png(framed)

    assert (load_pixels(marked, 256)[0] == 255.0).all()  # without the crop the frame is seen
    assert prepare_gray(framed, CROP).shape == (230, 230)  # round(256 * 0.05) = 13 per side
    # Everything the frame touched is cut away: the framed image becomes the plain one.
    np.testing.assert_array_equal(load_pixels(marked, 256, options=CROP),
                                  load_pixels(plain, 256, options=CROP))


@pytest.mark.parametrize(("shape", "fraction", "expected"), [
    ((300, 200), 0.05, (270, 180)),
    ((25, 25), 0.1, (19, 19)),  # 2.5 rows round up to 3 on each side
    ((3, 3), 0.2, (1, 1)),  # the largest crop always leaves a pixel
    ((64, 48), 0.0, (64, 48)),
])
def test_crop_rounds_half_up_on_each_axis(
    shape: tuple[int, int], fraction: float, expected: tuple[int, int]
) -> None:
    gray = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    cropped = prepare_gray(gray, PreprocessOptions(crop_border=fraction))
    assert cropped.shape == expected
    top, left = (shape[0] - expected[0]) // 2, (shape[1] - expected[1]) // 2
    np.testing.assert_array_equal(cropped, gray[top:top + expected[0], left:left + expected[1]])


# -- equalization ------------------------------------------------------------------------------
def test_histogram_equalization_spreads_the_histogram_evenly(radiography_root: Path) -> None:
    for path in _real_files(radiography_root, 2):
        equalized = prepare_gray(decode_grayscale(path.read_bytes()), HISTOGRAM)
        assert equalized.dtype == np.float32
        assert 0.0 <= equalized.min() and equalized.max() == pytest.approx(255.0)
        # A uniform distribution over 0..255 has its deciles at 25.5, 127.5 and 229.5.
        np.testing.assert_allclose(np.percentile(equalized, [10, 50, 90]),
                                   [25.5, 127.5, 229.5], atol=6.0, err_msg=path.name)


def test_clahe_raises_the_contrast_of_a_low_contrast_image(radiography_root: Path) -> None:
    grays = [decode_grayscale(p.read_bytes()) for p in _real_files(radiography_root, 10)]
    flat = min(grays, key=lambda g: float(g.std()))  # the flattest of 30 real radiographs
    enhanced = prepare_gray(flat, CLAHE)
    assert enhanced.dtype == np.float32
    assert enhanced.shape == flat.shape
    assert 0.0 <= enhanced.min() and enhanced.max() <= 255.0
    assert enhanced.std() > 1.2 * flat.std()
    assert _local_contrast(enhanced) > 1.5 * _local_contrast(flat)


def test_clahe_clip_limit_controls_the_strength(radiography_root: Path) -> None:
    gray = decode_grayscale(_real_files(radiography_root, 1)[0].read_bytes())
    mild = prepare_gray(gray, PreprocessOptions(equalize="clahe", clahe_clip_limit=0.005))
    strong = prepare_gray(gray, PreprocessOptions(equalize="clahe", clahe_clip_limit=0.05))
    assert _local_contrast(strong) > _local_contrast(mild)


@pytest.mark.parametrize("options", [HISTOGRAM, CLAHE, ALL])
def test_a_blank_image_stays_finite(options: PreprocessOptions) -> None:
    blank = np.full((64, 64), 40.0, dtype=np.float32)
    prepared = prepare_gray(blank, options)
    assert np.isfinite(prepared).all()
    assert 0.0 <= prepared.min() and prepared.max() <= 255.0


# -- the whole path ----------------------------------------------------------------------------
@pytest.mark.parametrize("options", [CROP, HISTOGRAM, CLAHE, ALL])
def test_file_bytes_and_a_decoded_gray_reach_the_same_pixels(
    radiography_root: Path, options: PreprocessOptions
) -> None:
    data = _real_files(radiography_root, 1)[-1].read_bytes()
    pixels = load_pixels(data, 64, options=options)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.float32
    assert not np.array_equal(pixels, load_pixels(data, 64))  # the options did something
    gray = decode_grayscale(data)
    np.testing.assert_array_equal(gray_to_pixels(gray, 64, options), pixels)
    # a gray prepared already is only resized (what Grad-CAM draws on)
    np.testing.assert_array_equal(gray_to_pixels(prepare_gray(gray, options), 64), pixels)


# -- recording the options ---------------------------------------------------------------------
@pytest.mark.parametrize("options", [PreprocessOptions(), CROP, HISTOGRAM, CLAHE, ALL,
                                     PreprocessOptions(reduce_large=True)])
def test_options_round_trip_through_json(options: PreprocessOptions) -> None:
    recorded = json.loads(json.dumps(options.as_dict()))
    assert recorded == {"equalize": options.equalize, "crop_border": options.crop_border,
                        "clahe_clip_limit": options.clahe_clip_limit,
                        "reduce_large": options.reduce_large}
    assert PreprocessOptions.from_dict(recorded) == options


def test_missing_keys_take_defaults_and_ints_become_floats() -> None:
    assert PreprocessOptions.from_dict({}) == PreprocessOptions()
    options = PreprocessOptions.from_dict({"crop_border": 0, "equalize": "histogram"})
    assert options == HISTOGRAM
    assert isinstance(options.crop_border, float)


@pytest.mark.parametrize("values", [
    {"equalize": "gamma"},
    {"equalize": None},
    {"crop_border": -0.01},
    {"crop_border": 0.21},
    {"crop_border": float("nan")},
    {"crop_border": True},
    {"crop_border": "0.1"},
    {"clahe_clip_limit": -0.1},
    {"clahe_clip_limit": 1.5},
    {"clahe_clip_limit": float("inf")},
    {"crop": 0.1},  # unknown key
])
def test_invalid_options_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PreprocessOptions.from_dict(values)


def test_preprocessing_id_names_each_option_set() -> None:
    assert preprocessing_id(PreprocessOptions()) == PREPROCESSING_ID
    assert preprocessing_id() == PREPROCESSING_ID
    assert preprocessing_id(ALL) == PREPROCESSING_ID + "+crop0.05+clahe0.02"
    assert preprocessing_id(HISTOGRAM) == PREPROCESSING_ID + "+histeq"
    sets = [PreprocessOptions(), CROP, HISTOGRAM, CLAHE, ALL,
            PreprocessOptions(crop_border=0.1), PreprocessOptions(crop_border=0.050001),
            PreprocessOptions(equalize="histogram", crop_border=0.05)]
    assert len({preprocessing_id(o) for o in sets}) == len(sets)


def test_preprocessing_id_ignores_a_clip_limit_that_changes_no_pixel() -> None:
    unused = PreprocessOptions(clahe_clip_limit=0.03)
    assert unused != PreprocessOptions()  # still recorded as given
    assert preprocessing_id(unused) == PREPROCESSING_ID
