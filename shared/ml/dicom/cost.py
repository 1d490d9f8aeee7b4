"""What decoding a DICOM file's stored pixels will hold, estimated from its header and its
frame's own before anything is decoded or inflated, so that a budget can count it."""

from __future__ import annotations

import io
from dataclasses import dataclass

from shared.ml.dicom.checks import check_header
from shared.ml.dicom.frames import check_frame, codec_of, frame_of
from shared.ml.dicom.header import inflated_bytes, pixel_source, read_header
from shared.ml.dicom.plugins import plugin_for

# Bytes a compressed frame's decoding holds, in decoded frames, measured: pydicom's array
# and the decoder's output; GDCM's own buffer, handed to Python as a str (two bytes a byte)
# then encoded to bytes (JPEG lossless and JPEG-LS, which only GDCM decodes); OpenJPEG's
# 32-bit samples (JPEG 2000); pylibjpeg-rle writes once.
DECODE_COPIES = {"jpeg": 6, "j2k": 7, "rle": 2}
# A JPEG frame Pillow decodes (every syntax it can: plugins.py) holds its image and the array.
PILLOW_JPEG_COPIES = 3


@dataclass(frozen=True)
class StoredCost:
    """What decoding a DICOM file's stored pixels holds beyond the file itself."""

    peak: int  # bytes at most while they are decoded
    held: int  # bytes that stay while they are displayed (native pixels are a view: 0)
    shape: tuple[int, int]  # rows, columns


def stored_cost(data: bytes, max_pixels: int) -> StoredCost:
    """``StoredCost`` from the header and the frame's own, without decoding (or inflating)
    the pixels; what decoding would refuse before decoding is refused alike."""
    header = read_header(data)
    check_header(header, max_pixels)
    if header.inflating is not None:
        inflated = inflated_bytes(header)
        return StoredCost(inflated, inflated, header.shape)
    source = pixel_source(header, data)
    if not isinstance(source, io.BytesIO):
        return StoredCost(0, 0, header.shape)
    frame = frame_of(header, source)
    check_frame(header, frame, max_pixels)
    stored = header.stored_bytes()
    # the frame's bytes twice (pydicom's copy, the decoder's) beside its decoded copies
    codec = codec_of(header.syntax)
    copies = (PILLOW_JPEG_COPIES if codec == "jpeg" and plugin_for(header.syntax) == "pillow"
              else DECODE_COPIES[codec])
    return StoredCost(2 * frame.length + copies * stored,
                      stored, header.shape)
