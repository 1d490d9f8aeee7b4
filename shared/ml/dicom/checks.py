"""Checks of a DICOM header before its pixels are decoded: one grayscale frame within the
pixel limit, a decoder for its transfer syntax, and modality and VOI transforms that map."""

from __future__ import annotations

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
from shared.ml.dicom.header import DicomHeader

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
BITS_ALLOCATED = (1, 8, 16, 32, 64)
# What a malformed element makes pydicom's transforms or a conversion raise.
MALFORMED = (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
             ZeroDivisionError)
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
MAX_BITS = 32  # BitsStored and a LUT's bits beyond this describe no real radiograph


def malformed(exc: Exception) -> InvalidImage:
    """The refusal of an element the checks let through that pydicom or numpy cannot use."""
    return InvalidImage(f"the DICOM header's pixel description is malformed "
                        f"({type(exc).__name__})")


def check_header(header: DicomHeader, max_pixels: int) -> None:
    """A single grayscale frame within ``max_pixels``, with a decoder: else refused."""
    ds = header.ds
    if not header.pixels_at:
        raise DicomWithoutPixels("the DICOM file has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in MONOCHROME:
        raise UnsupportedDicom(f"photometric interpretation {photometric or 'missing'!r} is "
                               "not accepted: chest radiographs are MONOCHROME1 or MONOCHROME2")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedDicom("multi-frame and multi-sample DICOM images are not accepted")
    rows, columns = header.shape
    if rows * columns > max_pixels:
        raise ImageTooLarge(f"{columns}x{rows} pixels exceeds the limit of {max_pixels}")
    if rows < 1 or columns < 1:
        raise InvalidImage("the DICOM file declares no rows or columns")
    if ds.get("BitsAllocated") not in BITS_ALLOCATED:
        raise InvalidImage("the DICOM header's BitsAllocated is invalid")
    _check_decoder(ds)


def _check_decoder(ds: Any) -> None:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        available = get_decoder(ds.file_meta.TransferSyntaxUID).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise UnsupportedTransferSyntax(no_decoder_message(ds))


def no_decoder_message(ds: Any) -> str:
    """What a refusal for want of a decoder says: the transfer syntax's name and UID."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    name = getattr(syntax, "name", "") or "unknown"
    return f"no decoder for the DICOM transfer syntax {name} ({syntax})"


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


def check_transforms(ds: Any) -> None:
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

