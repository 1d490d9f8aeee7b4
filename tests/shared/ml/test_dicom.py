"""DICOM decodes to what the PNG of the same pixels decodes to, in the standard's order, and
what the service does not read is refused with a code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.errors import CxrError
from shared.ml.preprocessing import decode_grayscale
from tests.helpers.dicom import (
    as_12_bit,
    gray_of,
    make_dicom,
    malformed_dicoms,
    well_formed_luts,
)
from tests.helpers.env import sample_files

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"


@pytest.fixture(scope="module")
def png(radiography_root: Path) -> bytes:
    return sample_files(radiography_root, 1)["COVID"][0].read_bytes()


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
    window = {"RescaleSlope": 1, "RescaleIntercept": -1024,
              "WindowCenter": 500, "WindowWidth": 1000}
    for photometric, expected in (("MONOCHROME2", [0, 127.6, 255, 255]),
                                  ("MONOCHROME1", [255, 127.4, 0, 0])):
        decoded = decode_grayscale(make_dicom(stored, 12, photometric, **window))
        np.testing.assert_allclose(decoded[0], expected, atol=0.5)


def _refused(data: bytes, code: str, max_pixels: int = 10**8) -> str:
    with pytest.raises(CxrError) as caught:
        decode_grayscale(data, max_pixels)
    assert caught.value.code == code
    return caught.value.message


def test_what_is_not_a_single_grayscale_frame_is_refused() -> None:
    gray = np.zeros((2, 16, 16), np.uint8)
    _refused(make_dicom(gray, 8, NumberOfFrames=2), "unsupported_dicom")
    rgb = make_dicom(np.zeros((16, 16), np.uint8), 8, "RGB")
    assert "RGB" in _refused(rgb, "unsupported_dicom")


def test_a_dicom_without_pixels_or_with_too_many_is_refused() -> None:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((16, 16), np.uint8), 8)))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    _refused(buffer.getvalue(), "dicom_no_pixel_data")
    _refused(make_dicom(np.zeros((64, 64), np.uint8), 8), "image_too_large", max_pixels=4096 - 1)


def test_a_transfer_syntax_without_a_decoder_is_refused_by_name() -> None:
    import io

    import pydicom
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((16, 16), np.uint8), 8)))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: video, no decoder
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert "MPEG2" in _refused(buffer.getvalue(), "unsupported_transfer_syntax")


def test_damaged_dicoms_are_invalid_images(png: bytes) -> None:
    data = make_dicom(as_12_bit(gray_of(png)), 12, syntax=JPEG2000_LOSSLESS)
    _refused(data[: len(data) // 2], "invalid_image")
    _refused(data[:140], "invalid_image")


@pytest.mark.parametrize("name", list(malformed_dicoms()))
def test_a_malformed_pixel_description_is_an_invalid_image_never_nan(name: str) -> None:
    with pytest.raises(CxrError) as caught:
        decode_grayscale(malformed_dicoms()[name])
    assert caught.value.code == "invalid_image", caught.value.message
    assert "DICOM header" in caught.value.message


def test_valid_lookup_tables_still_decode() -> None:
    for name, data in well_formed_luts().items():
        gray = decode_grayscale(data)
        assert np.isfinite(gray).all() and gray.max() > gray.min(), name
