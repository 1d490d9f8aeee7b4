"""DICOM decodes to what the PNG of the same pixels decodes to, in the standard's order, a
deflated file as its native one, and in tiles as from the whole image."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from shared.ml.dicom import decode_dicom, display, to_display
from shared.ml.preprocessing import decode_grayscale
from tests.helpers.dicom import (
    as_12_bit,
    deflated_dicom,
    gray_of,
    make_dicom,
    well_formed_luts,
)

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"


def test_8_bit_dicoms_decode_exactly_like_the_png(png: bytes) -> None:
    gray = gray_of(png)
    expected = decode_grayscale(png)
    np.testing.assert_array_equal(decode_grayscale(make_dicom(gray, 8)), expected)
    # MONOCHROME1 stores white as 0: inverted back
    np.testing.assert_array_equal(
        decode_grayscale(make_dicom(255 - gray, 8, "MONOCHROME1")), expected)


@pytest.mark.parametrize("syntax", [None, JPEG2000_LOSSLESS, RLE_LOSSLESS],
                         ids=["uncompressed", "jpeg2000", "rle"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_12_bit_dicoms_are_scaled_by_their_bit_depth(png: bytes, syntax: str | None,
                                                     photometric: str) -> None:
    stored = as_12_bit(gray_of(png))
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    data = make_dicom(stored, 12, photometric, **({"syntax": syntax} if syntax else {}))
    # 4095 levels back onto 255: within the rounding of the 12-bit copy
    np.testing.assert_allclose(decode_grayscale(data), decode_grayscale(png), atol=0.04)


def test_a_12_bit_image_is_not_stretched_to_its_own_range() -> None:
    # a dim 12-bit image (values 0..1000) stays dim: the range is BitsStored's, not min..max
    stored = np.linspace(0, 1000, 64 * 64).reshape(64, 64).astype(np.uint16)
    decoded = decode_grayscale(make_dicom(stored, 12))
    assert decoded.max() == pytest.approx(1000 * 255 / 4095, abs=1e-3)


def test_rescale_then_window_then_invert() -> None:
    # stored 0..4095; rescale to -1024..3071 (CT-like units); a window on 0..1000
    stored = np.array([[1024, 1524, 2024, 3000]], dtype=np.uint16).repeat(8, axis=0)
    window: dict[str, Any] = {"RescaleSlope": 1, "RescaleIntercept": -1024,
                              "WindowCenter": 500, "WindowWidth": 1000}
    for photometric, expected in (("MONOCHROME2", [0, 127.6, 255, 255]),
                                  ("MONOCHROME1", [255, 127.4, 0, 0])):
        decoded = decode_grayscale(make_dicom(stored, 12, photometric, **window))
        np.testing.assert_allclose(decoded[0], expected, atol=0.5)


def test_valid_lookup_tables_still_decode() -> None:
    for name, data in well_formed_luts().items():
        gray = decode_grayscale(data)
        assert np.isfinite(gray).all() and gray.max() > gray.min(), name


# -- a deflated file decodes as its native one ----------------------------------------------
def test_a_deflated_dicom_decodes_like_the_native_one(png: bytes) -> None:
    stored = as_12_bit(gray_of(png))
    for elements in ({}, {"WindowCenter": 1500, "WindowWidth": 2000},
                     {"VOILUTSequence": _ramp_lut()}):
        np.testing.assert_array_equal(decode_grayscale(deflated_dicom(stored, 12, **elements)),
                                      decode_grayscale(make_dicom(stored, 12, **elements)))


def _ramp_lut() -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 12])
    item.add_new(0x00283006, "OW", np.arange(4096, dtype=np.uint16)[::-1].tobytes())
    return Sequence([item])


# -- display in tiles, reduced as it goes: what the whole image gave ------------------------
def _whole_image_display(data: bytes, factors: tuple[int, int]) -> np.ndarray:
    """The path before tiles: pydicom's whole array, the transforms on all of it, then the
    float image reduced."""
    import io

    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(io.BytesIO(data))
    gray = to_display(ds.pixel_array, ds)
    if factors != (1, 1):
        gray = np.asarray(Image.fromarray(gray).reduce(factors), np.float32)
    return gray


def _tiled_cases() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    stored = rng.integers(0, 4096, (61, 47)).astype(np.uint16)
    signed = rng.integers(-2048, 2048, (61, 47)).astype(np.int16)
    dirty = stored | np.uint16(0xA000)  # garbage in the 4 unused high bits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "12-bit": make_dicom(stored, 12),
            "MONOCHROME1": make_dicom(stored, 12, "MONOCHROME1"),
            "windowed": make_dicom(stored, 12, WindowCenter=1800, WindowWidth=900),
            "sigmoid": make_dicom(stored, 12, WindowCenter=1800, WindowWidth=900,
                                  VOILUTFunction="SIGMOID"),
            "rescaled": make_dicom(stored, 12, "MONOCHROME1", RescaleSlope=0.5,
                                   RescaleIntercept=-1024, WindowCenter=-300,
                                   WindowWidth=1200),
            "VOI LUT": make_dicom(stored, 12, VOILUTSequence=_ramp_lut()),
            "unused bits set": make_dicom(dirty, 12),
            "signed": _signed(signed),
            "deflated": deflated_dicom(stored, 12, WindowCenter=1000, WindowWidth=3000),
        }


def _signed(stored: np.ndarray) -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(stored.view(np.uint16), 12)))
    ds.PixelRepresentation = 1
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("name", list(_tiled_cases()))
@pytest.mark.parametrize("factors", [(1, 1), (3, 3), (2, 5), (7, 1)])
def test_the_tiled_display_equals_the_whole_image_path(
        name: str, factors: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    data = _tiled_cases()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a VOI LUT applied to float values
        expected = _whole_image_display(data, factors)
        for tile_pixels in (10**6, 150, 40):  # one tile, strips of rows, columns too
            monkeypatch.setattr(display, "TILE_PIXELS", tile_pixels)
            np.testing.assert_array_equal(decode_dicom(data, 10**8, factors), expected,
                                          err_msg=f"{name}, {tile_pixels}-pixel tiles")
