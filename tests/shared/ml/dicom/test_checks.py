"""What the service does not read is refused with a code, and before it is decoded: a frame
unlike its header, a deflated file that inflates past what its header's pixels need."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import CxrError
from shared.ml.preprocessing import decode_grayscale
from tests.helpers.dicom import (
    JPEG_LS_LOSSLESS,
    as_12_bit,
    deflated_dicom,
    encapsulated_dicom,
    first_frame,
    frame_header_only,
    gray_of,
    make_dicom,
    malformed_dicoms,
)

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"


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
    from pydicom.uid import UID

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((16, 16), np.uint8), 8)))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder
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


# -- a frame is checked against its header before it is decoded ----------------------------
def _jpeg(pixels: np.ndarray, **save: object) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **save)
    return buffer.getvalue()


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding pixel data fails the test: what is refused must be refused before it."""
    from pydicom.pixels.decoders.base import Decoder

    def decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("the frame was decoded")

    monkeypatch.setattr(Decoder, "as_array", decode)


def test_a_frame_larger_than_its_header_is_refused_undecoded(no_decoding: None) -> None:
    frame = _jpeg(np.zeros((300, 200), np.uint8))  # 200 wide, 300 high
    message = _refused(encapsulated_dicom(frame, 16, 16), "invalid_image")
    assert "200x300" in message and "16x16" in message, message
    # beyond the pixel limit: too large, whatever the header says
    assert "200x300" in _refused(encapsulated_dicom(frame, 16, 16), "image_too_large",
                                 max_pixels=50_000)


@pytest.mark.parametrize("wrap", ["codestream", "jp2"])
def test_a_jpeg_2000_frame_is_checked_too(wrap: str, no_decoding: None) -> None:
    import io

    from PIL import Image

    if wrap == "jp2":
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((80, 70), np.uint8)).save(buffer, "JPEG2000", no_jp2=False)
        frame = buffer.getvalue()
        assert frame[4:8] == b"jP  "
    else:
        stored = np.random.default_rng(1).integers(0, 4096, (80, 70)).astype(np.uint16)
        frame = first_frame(make_dicom(stored, 12, syntax=JPEG2000_LOSSLESS))
    data = encapsulated_dicom(frame, 20, 70, JPEG2000_LOSSLESS, 16, 12)
    assert "70x80" in _refused(data, "invalid_image")


@pytest.mark.parametrize(("frame", "needle"), [
    (frame_header_only(16, 16, components=3), "3 components"),
    (frame_header_only(16, 16, precision=12, marker=0xC1), "12-bit"),
    (frame_header_only(16, 0), "unreadable"),  # its height would follow in a DNL marker
    (b"\xff\xd8\xff\xda\x00\x02", "unreadable"),  # a scan before any frame header
    (b"not a codestream at all", "unreadable"),
], ids=["components", "precision", "no-height", "scan-first", "garbage"])
def test_a_frame_unlike_its_header_is_refused(frame: bytes, needle: str,
                                              no_decoding: None) -> None:
    assert needle in _refused(encapsulated_dicom(frame, 16, 16), "invalid_image")


def test_jpeg_ls_and_rle_frames_are_checked(no_decoding: None) -> None:
    jls = frame_header_only(64, 48, precision=12, marker=0xF7)
    data = encapsulated_dicom(jls, 16, 16, JPEG_LS_LOSSLESS, 16, 12)
    assert "64x48" in _refused(data, "invalid_image")
    # RLE holds no size: one segment per byte of a sample, no more
    header = np.array([2, 64, 64 + 8] + [0] * 13, "<u4").tobytes()
    data = encapsulated_dicom(header + b"\x07\x00" * 8, 16, 16, RLE_LOSSLESS)
    assert "16-bit" in _refused(data, "invalid_image")


def test_matching_frames_decode(png: bytes) -> None:
    gray = gray_of(png)[:200, :300]
    frame = _jpeg(gray, quality=95)
    decoded = decode_grayscale(encapsulated_dicom(frame, *gray.shape))
    assert decoded.shape == gray.shape
    assert np.abs(decoded - gray).mean() < 2


# -- deflated files are inflated no further than their header's pixels need -----------------
def _deflated_with(pixel_bytes: int, private_bytes: int = 0) -> bytes:
    """A deflated 16x16 8-bit file whose pixel data holds ``pixel_bytes`` (not 256), after a
    private element of ``private_bytes``."""
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(deflated_dicom(np.zeros((16, 16), np.uint8), 8)))
    if private_bytes:
        ds.add_new(0x00091010, "OB", b"\0" * private_bytes)
    ds.PixelData = b"\0" * pixel_bytes
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_deflate_bomb_is_refused_as_it_inflates_past_the_header() -> None:
    bomb = _deflated_with(64 * 2**20)
    assert len(bomb) < 200_000
    assert "inflates to more than" in _refused(bomb, "invalid_image")
    assert "inflates to more than" in _refused(_deflated_with(256, private_bytes=8 * 2**20),
                                               "invalid_image")
    assert decode_grayscale(_deflated_with(256, private_bytes=2**16)).shape == (16, 16)


def test_a_truncated_deflated_dicom_is_an_invalid_image(png: bytes) -> None:
    data = deflated_dicom(as_12_bit(gray_of(png)), 12)
    _refused(data[: len(data) // 2], "invalid_image")
    _refused(data[:400], "invalid_image")

