"""A compressed frame's own size, from its codestream header (JPEG, JPEG-LS, JPEG 2000 bare
or in JP2, RLE's segments), checked against the DICOM header before the frame is decoded."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

from shared.errors import ImageTooLarge, InvalidImage, UnsupportedTransferSyntax
from shared.ml.dicom.header import DicomHeader

RLE_LOSSLESS = "1.2.840.10008.1.2.5"


@dataclass(frozen=True)
class Frame:
    """What a compressed frame's codestream header says of the image it holds."""

    width: int
    height: int
    components: int
    precision: int  # bits per sample
    length: int  # bytes of the encoded frame


def codec_of(syntax: Any) -> str:
    """The codec family of a compressed syntax: jpeg (JPEG-LS too), j2k or rle; else refused."""
    from pydicom.uid import (
        JPEG2000TransferSyntaxes,
        JPEGLSTransferSyntaxes,
        JPEGTransferSyntaxes,
    )

    if syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        return "jpeg"
    if syntax in JPEG2000TransferSyntaxes:
        return "j2k"
    if syntax == RLE_LOSSLESS:
        return "rle"
    raise UnsupportedTransferSyntax(f"the DICOM transfer syntax {syntax.name} is not accepted: "
                                    "its frames cannot be checked before they are decoded")


def frame_of(header: DicomHeader, pixels: io.BytesIO) -> Frame:
    """What the first frame's codestream header says, read without decoding the frame. An
    RLE frame's header holds no size (its decoder writes no more than the DICOM header's):
    its segments (one per byte of a sample) give its precision."""
    from pydicom.encaps import get_frame

    codec = codec_of(header.syntax)
    start = pixels.tell()
    try:
        frame = get_frame(pixels, 0, number_of_frames=1)
    except Exception as exc:  # a damaged item structure fails in several ways
        raise InvalidImage(f"the DICOM pixel data could not be decoded ({type(exc).__name__})"
                           ) from exc
    finally:
        pixels.seek(start)
    if codec == "jpeg":
        return _jpeg_frame(frame)
    if codec == "j2k":
        return _j2k_frame(frame)
    rows, columns = header.shape
    segments = struct.unpack_from("<L", frame)[0] if len(frame) >= 64 else 0
    return Frame(columns, rows, 1, 8 * segments, len(frame))


def check_frame(header: DicomHeader, frame: Frame, max_pixels: int) -> None:
    """The frame holds the image the header describes, no larger: else refused, undecoded."""
    rows, columns = header.shape
    size = f"{frame.width}x{frame.height}"
    if frame.width * frame.height > max_pixels:
        raise ImageTooLarge(f"the DICOM pixel data's frame of {size} pixels exceeds the limit "
                            f"of {max_pixels}")
    if (frame.width, frame.height) != (columns, rows):
        raise InvalidImage(f"the DICOM pixel data's frame is {size} pixels where its header "
                           f"says {columns}x{rows}")
    samples = int(header.ds.get("SamplesPerPixel", 1))
    if frame.components != samples:
        raise InvalidImage(f"the DICOM pixel data's frame has {frame.components} components "
                           f"where its header says {samples}")
    if frame.precision > int(header.ds.BitsAllocated):
        raise InvalidImage(f"the DICOM pixel data's frame has {frame.precision}-bit samples "
                           f"where its header allocates {header.ds.BitsAllocated} bits")


# Start of frame markers: every JPEG process (not DHT C4, JPG C8, DAC CC), and JPEG-LS's F7.
JPEG_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})


def _unreadable() -> InvalidImage:
    return InvalidImage("the DICOM pixel data's frame header is unreadable")


def _jpeg_frame(frame: bytes) -> Frame:
    """The frame header (SOFn) of a JPEG or JPEG-LS codestream, found by walking its markers."""
    if frame[:2] != b"\xff\xd8":
        raise _unreadable()
    at = 2
    while at + 4 <= len(frame):
        if frame[at] != 0xFF:
            break
        marker = frame[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        length = struct.unpack_from(">H", frame, at + 2)[0]
        if marker in JPEG_SOF and at + 10 <= len(frame) and length >= 8:
            precision, height, width, components = struct.unpack_from(">BHHB", frame, at + 4)
            if height == 0:  # the height would come later, in a DNL marker
                break
            return Frame(width, height, components, precision, len(frame))
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            break
        at += 2 + length
    raise _unreadable()


def _j2k_frame(frame: bytes) -> Frame:
    """The image and tile size (SIZ) of a JPEG 2000 codestream, bare or in a JP2 file."""
    at = 0 if frame[:4] == b"\xff\x4f\xff\x51" else _jp2_codestream(frame)
    siz = at + 4  # after SOC and the SIZ marker
    if frame[at:at + 4] != b"\xff\x4f\xff\x51" or len(frame) < siz + 38:
        raise _unreadable()
    width, height, x0, y0 = struct.unpack_from(">4L", frame, siz + 4)
    components = struct.unpack_from(">H", frame, siz + 36)[0]
    depths = frame[siz + 38:siz + 38 + 3 * components:3]
    if width <= x0 or height <= y0 or not components or len(depths) != components:
        raise _unreadable()
    return Frame(width - x0, height - y0, components, max(d & 0x7F for d in depths) + 1,
                 len(frame))


def _jp2_codestream(frame: bytes) -> int:
    """Where the codestream box of a JP2 file starts its contents."""
    at = 0
    while at + 8 <= len(frame):
        length, kind = struct.unpack_from(">L4s", frame, at)
        header = 8
        if length == 1 and at + 16 <= len(frame):
            length, header = struct.unpack_from(">Q", frame, at + 8)[0], 16
        if kind == b"jp2c":
            return at + header
        if length < header:
            break
        at += length
    raise _unreadable()

