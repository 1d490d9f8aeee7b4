"""DICOM radiographs to the same float gray image in [0, 255] that PNGs decode to.

Files are recognised by content (the ``DICM`` marker of a Part 10 file), never by name. The
pixel pipeline follows PS3.4 N.2: stored values, then the modality LUT (or rescale slope and
intercept), then the VOI LUT (or window center and width), then MONOCHROME1 inverted so that
bright is dense as in a PNG, and the result mapped onto [0, 255] from the range the header
defines (``BitsStored`` and the transforms), not from the image's own min and max: a
12-bit image is read as 12 bits. From there PNGs and DICOMs share the same preprocessing.

Memory is bounded by the header's pixels, whatever the pixel data holds: the header is read
without the pixel data; a deflated file is inflated only as far as those pixels need; a
compressed frame's own codestream header must describe the header's image before the frame
is decoded; native pixels are used where they lie; and the display transforms run in tiles,
reduced as they go, so that no full-size float copy exists.

``header`` reads the elements before the pixels, ``checks`` refuses what is not one usable
grayscale frame, ``frames`` reads a compressed frame's own size, ``display`` maps the stored
pixels onto [0, 255] in tiles and ``cost`` says what decoding will hold; this module decodes.

No header value other than the pixel description is read, and none appears in an error:
patient data never reaches a log line or a response.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from shared.errors import CxrError, InvalidImage, UnsupportedDicom, UnsupportedTransferSyntax
from shared.ml.dicom.checks import (
    check_header,
    check_transforms,
    malformed,
    no_decoder_message,
)
from shared.ml.dicom.cost import StoredCost, stored_cost
from shared.ml.dicom.display import DicomImage, Factors, tile_shape, to_display
from shared.ml.dicom.frames import Frame, check_frame, frame_of
from shared.ml.dicom.header import DicomHeader, pixel_source, read_header
from shared.ml.dicom.isolated import decode_in_child
from shared.ml.dicom.plugins import plugin_for

__all__ = [
    "DicomHeader", "DicomImage", "Factors", "Frame", "StoredCost", "check_frame",
    "check_header", "decode_dicom", "frame_of", "is_dicom", "open_dicom", "read_header",
    "stored_cost", "tile_shape", "to_display",
]


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: a 128-byte preamble, then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def decode_dicom(data: bytes, max_pixels: int, factors: Factors = (1, 1)) -> np.ndarray:
    """Decode a single-frame grayscale DICOM to a float32 HxW array in [0, 255], box-reduced
    by ``factors`` (along x, along y)."""
    return open_dicom(data, max_pixels).display(factors)


def open_dicom(data: bytes, max_pixels: int) -> DicomImage:
    """Read, check and decode a DICOM file's stored pixels, never holding more than its
    header's pixels need."""
    header = read_header(data)
    try:
        check_header(header, max_pixels)
        check_transforms(header.ds)
        source = pixel_source(header, data)
        if isinstance(source, io.BytesIO):
            check_frame(header, frame_of(header, source), max_pixels)
        stored = _stored_pixels(header, source, data)
        unused = 0 if header.encapsulated else _unused_bits(header.ds)
    except CxrError:
        raise
    except Exception as exc:
        # pydicom converts an element when it is first read, so any read may meet a damaged
        # one (an unknown VR, a length that fits no value): the file is refused, not a 500.
        raise malformed(exc) from exc
    return DicomImage(header.ds, stored, unused)


def _unused_bits(ds: Any) -> int:
    return max(0, int(ds.BitsAllocated) - int(ds.BitsStored)) if ds.BitsAllocated > 1 else 0


def _stored_pixels(header: DicomHeader, source: memoryview | io.BytesIO,
                   data: bytes) -> np.ndarray:
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.pixels.utils import as_pixel_options

    decoder = get_decoder(header.syntax)
    plugin = plugin_for(header.syntax)
    if header.encapsulated and not plugin and decoder.is_available:
        # only GDCM decodes it, and GDCM may abort the process on a damaged frame
        return _single_frame(decode_in_child(data))
    options: dict[str, Any] = {**as_pixel_options(header.ds), "pixel_keyword": "PixelData"}
    if not header.encapsulated:
        # a view of the file, whose unused bits DicomImage clears (pydicom would copy it)
        options.update(view_only=True, correct_unused_bits=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. excess padding: pydicom drops it
            stored, _ = decoder.as_array(source, decoding_plugin=plugin, **options)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntax(no_decoder_message(header.ds)) from exc
    except Exception as exc:  # a damaged or truncated pixel stream fails in decoder-specific ways
        raise InvalidImage(f"the DICOM pixel data could not be decoded ({type(exc).__name__})"
                           ) from exc
    except BaseException as exc:
        # pylibjpeg-rle is Rust: a panic on a damaged stream is pyo3's PanicException, which
        # derives from BaseException. Only that is turned into a refusal.
        if type(exc).__name__ != "PanicException":
            raise
        raise InvalidImage("the DICOM pixel data could not be decoded (PanicException)"
                           ) from exc
    return _single_frame(stored)


def _single_frame(stored: np.ndarray) -> np.ndarray:
    if stored.ndim != 2:
        raise UnsupportedDicom("only single-frame grayscale DICOM images are accepted")
    return stored
