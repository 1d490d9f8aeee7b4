"""DICOM radiographs to the same float gray image in [0, 255] that PNGs decode to.

Files are recognised by content (the ``DICM`` marker of a Part 10 file), never by name. The
pixel pipeline follows PS3.4 N.2: stored values, then the modality LUT (or rescale slope and
intercept), then the VOI LUT (or window center and width), then MONOCHROME1 inverted so that
bright is dense as in a PNG, and the result mapped onto [0, 255] from the range the header
defines (``BitsStored`` and the transforms), not from the image's own min and max: a
12-bit image is read as 12 bits. From there PNGs and DICOMs share the same preprocessing.

No header value other than the pixel description is read, and none appears in an error:
patient data never reaches a log line or a response.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.errors import (
    DicomWithoutPixels,
    ImageTooLarge,
    InvalidImage,
    UnsupportedDicom,
    UnsupportedTransferSyntax,
)

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: a 128-byte preamble, then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def decode_dicom(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode a single-frame grayscale DICOM to a float32 HxW array in [0, 255]."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        # pydicom's messages may quote element values: name the failure, not the content.
        raise InvalidImage(f"the DICOM file could not be read ({type(exc).__name__})") from exc
    if any("End of file reached" in str(w.message) for w in caught):
        raise InvalidImage("the DICOM file is truncated")
    if "TransferSyntaxUID" not in ds.file_meta:  # mandatory in a Part 10 file
        raise InvalidImage("the DICOM file's meta header is incomplete")
    try:
        _check_supported(ds, max_pixels)
        _check_transforms(ds)
        stored = _stored_pixels(ds)
        gray = to_display(stored, ds)
    except MALFORMED as exc:
        # an element the checks above let through that pydicom or numpy cannot use
        raise InvalidImage(f"the DICOM header's pixel description is malformed "
                           f"({type(exc).__name__})") from exc
    if not np.isfinite(gray).all():
        raise InvalidImage("the DICOM header's rescale or window values give non-finite "
                           "pixels")
    return gray


# What a malformed element makes pydicom's transforms or a conversion raise.
MALFORMED = (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
             ZeroDivisionError)
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
MAX_BITS = 32  # BitsStored and a LUT's bits beyond this describe no real radiograph


def _stored_pixels(ds: Any) -> np.ndarray:
    try:
        stored = np.asarray(ds.pixel_array)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntax(_no_decoder_message(ds)) from exc
    except Exception as exc:  # a damaged or truncated pixel stream fails in decoder-specific ways
        raise InvalidImage(f"the DICOM pixel data could not be decoded ({type(exc).__name__})"
                           ) from exc
    if stored.ndim != 2:
        raise UnsupportedDicom("only single-frame grayscale DICOM images are accepted")
    return stored


def _finite(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except MALFORMED:
        return False


def _values(element: Any) -> list[Any]:
    """A DICOM element's values, one or many (pydicom's MultiValue is a Sequence)."""
    if element is None:
        return []
    if isinstance(element, Sequence) and not isinstance(element, str | bytes):
        return list(element)
    return [element]


def _check_transforms(ds: Any) -> None:
    """The header's modality and VOI transforms describe a usable mapping: refused here with
    the element named (never its value), instead of failing or yielding NaN further on."""
    def invalid(what: str) -> InvalidImage:
        return InvalidImage(f"the DICOM header's {what} is invalid")

    bits = ds.get("BitsStored")
    if bits is None or not _finite(bits) or not 1 <= int(bits) <= MAX_BITS:
        raise invalid("BitsStored")
    for name in ("ModalityLUTSequence", "VOILUTSequence"):
        if name in ds:
            items = ds.get(name)
            if not items:
                raise invalid(name)
            descriptor = _values(items[0].get("LUTDescriptor", []))
            if (len(descriptor) != 3 or not all(_finite(v) for v in descriptor)
                    or not 1 <= int(descriptor[2]) <= MAX_BITS or "LUTData" not in items[0]):
                raise invalid(f"{name}'s LUT descriptor")
    for name in ("RescaleSlope", "RescaleIntercept"):
        if ds.get(name) is not None and not _finite(ds.get(name)):
            raise invalid(name)
    if ds.get("RescaleSlope") is not None and float(ds.RescaleSlope) == 0:
        raise invalid("RescaleSlope")
    if "VOILUTSequence" not in ds and ds.get("WindowWidth") is not None:
        widths = _values(ds.WindowWidth)
        centers = _values(ds.get("WindowCenter"))
        if not widths or not all(_finite(w) and float(w) > 0 for w in widths):
            raise invalid("WindowWidth")
        if not centers or not all(_finite(c) for c in centers):
            raise invalid("WindowCenter")
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        if function not in VOI_FUNCTIONS:
            raise invalid("VOILUTFunction")


def _check_supported(ds: Any, max_pixels: int) -> None:
    if "PixelData" not in ds:
        raise DicomWithoutPixels("the DICOM file has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in MONOCHROME:
        raise UnsupportedDicom(f"photometric interpretation {photometric or 'missing'!r} is "
                               "not accepted: chest radiographs are MONOCHROME1 or MONOCHROME2")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedDicom("multi-frame and multi-sample DICOM images are not accepted")
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * columns > max_pixels:
        raise ImageTooLarge(f"{columns}x{rows} pixels exceeds the limit of {max_pixels}")
    if rows < 1 or columns < 1:
        raise InvalidImage("the DICOM file declares no rows or columns")
    _check_decoder(ds)


def _check_decoder(ds: Any) -> None:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        available = get_decoder(ds.file_meta.TransferSyntaxUID).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise UnsupportedTransferSyntax(_no_decoder_message(ds))


def _no_decoder_message(ds: Any) -> str:
    syntax = ds.file_meta.get("TransferSyntaxUID")
    name = getattr(syntax, "name", "") or "unknown"
    return f"no decoder for the DICOM transfer syntax {name} ({syntax})"


def to_display(stored: np.ndarray, ds: Any) -> np.ndarray:
    """Stored values to [0, 255]: modality LUT, VOI LUT or window, MONOCHROME1 inverted."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    low, high = _modality_range(ds)
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        low, high = 0.0, float(2**bits - 1)
    values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
    low, high = min(low, high), max(low, high)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InvalidImage("the DICOM header's rescale values give a non-finite range")
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    scaled = np.clip((values - low) * (255.0 / (high - low)), 0.0, 255.0)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        scaled = 255.0 - scaled
    return scaled.astype(np.float32)


def _modality_range(ds: Any) -> tuple[float, float]:
    """The range of values after the modality transform, as the header defines it."""
    if "ModalityLUTSequence" in ds:
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high
