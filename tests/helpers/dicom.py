"""DICOM files written with pydicom from real pixels, as a modality would send them."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

# Digital X-Ray Image Storage - For Presentation
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
MARKER_NAME = "ZEBRAQUILL^MARKER"
MARKER_ID = "MRK-7731-ZQ"


def make_dicom(stored: np.ndarray, bits_stored: int, photometric: str = "MONOCHROME2",
               syntax: str = "1.2.840.10008.1.2.1", **elements: Any) -> bytes:
    """A Part 10 file holding ``stored`` (uint8 or uint16, HxW) with a patient in its header,
    encoded in transfer syntax ``syntax`` (explicit VR little endian by default)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(DX_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = MARKER_NAME, MARKER_ID, "DX"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if stored.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    for name, value in elements.items():
        setattr(ds, name, value)
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, encoding_plugin="pylibjpeg")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def gray_of(png: bytes) -> np.ndarray:
    """The 8-bit gray pixels of a PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def as_12_bit(gray: np.ndarray) -> np.ndarray:
    """The same picture in 12 bits: 0..255 spread over 0..4095."""
    return np.rint(gray.astype(np.float64) * (4095 / 255)).astype(np.uint16)


def _lut(descriptor: list[int]) -> Any:
    """A one-item LUT sequence with ``descriptor`` and a 256-entry ramp."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new(0x00283002, "US", descriptor)  # LUT Descriptor
    item.add_new(0x00283006, "OW", np.arange(256, dtype=np.uint16).tobytes())  # LUT Data
    return Sequence([item])


def malformed_dicoms() -> dict[str, bytes]:
    """Files whose pixel description a modality should never write: transforms that cannot be
    applied, and values that make the pixels non-finite. Each must be refused with a code."""
    from pydicom.sequence import Sequence

    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    cases: dict[str, dict[str, Any]] = {
        "window width 0": {"WindowCenter": 128, "WindowWidth": 0},
        "window width negative": {"WindowCenter": 128, "WindowWidth": -50},
        "unknown VOI LUT function": {"WindowCenter": 128, "WindowWidth": 100,
                                     "VOILUTFunction": "CUBIC"},
        "sigmoid with width 0": {"WindowCenter": 128, "WindowWidth": 0,
                                 "VOILUTFunction": "SIGMOID"},
        "window center NaN": {"WindowCenter": "NaN", "WindowWidth": 100},
        "empty modality LUT sequence": {"ModalityLUTSequence": Sequence([])},
        "empty VOI LUT sequence": {"VOILUTSequence": Sequence([])},
        "two-value VOI LUT descriptor": {"VOILUTSequence": _lut([256, 0])},
        "one-value modality LUT descriptor": {"ModalityLUTSequence": _lut([256])},
        "1100-bit VOI LUT": {"VOILUTSequence": _lut([256, 0, 1100])},
        "rescale slope NaN": {"RescaleSlope": "NaN", "RescaleIntercept": 0},
        "rescale slope inf": {"RescaleSlope": "inf", "RescaleIntercept": 0},
        "rescale slope 1e308": {"RescaleSlope": "1e308", "RescaleIntercept": 0},
        "rescale intercept -inf": {"RescaleSlope": 1, "RescaleIntercept": "-inf"},
    }
    with warnings.catch_warnings():  # pydicom warns of the invalid values written on purpose
        warnings.simplefilter("ignore")
        return {name: make_dicom(ramp, 8, **elements) for name, elements in cases.items()}


def well_formed_luts() -> dict[str, bytes]:
    """The same ramp through a valid modality LUT and a valid VOI LUT: decoded, not refused."""
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    return {"modality LUT": make_dicom(ramp, 8, ModalityLUTSequence=_lut([256, 0, 8])),
            "VOI LUT": make_dicom(ramp, 8, VOILUTSequence=_lut([256, 0, 8]))}


DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def deflated_dicom(stored: np.ndarray, bits_stored: int, photometric: str = "MONOCHROME2",
                   **elements: Any) -> bytes:
    """``make_dicom``'s file in the deflated explicit VR little endian transfer syntax."""
    import pydicom
    from pydicom.uid import UID

    ds = pydicom.dcmread(io.BytesIO(make_dicom(stored, bits_stored, photometric, **elements)))
    ds.file_meta.TransferSyntaxUID = UID(DEFLATED)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encapsulated_dicom(frame: bytes, rows: int, columns: int, syntax: str = JPEG_BASELINE,
                       bits_allocated: int = 8, bits_stored: int = 8, **elements: Any) -> bytes:
    """A file whose header declares ``rows`` x ``columns`` grayscale pixels and whose pixel
    data is ``frame``, encapsulated as it is (the two need not agree)."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    stored = np.zeros((1, 1), np.uint8 if bits_allocated == 8 else np.uint16)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(stored, bits_stored)))
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = bits_allocated
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    for name, value in elements.items():
        setattr(ds, name, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"


def frame_header_only(width: int, height: int, components: int = 1, precision: int = 8,
                      marker: int = 0xC0) -> bytes:
    """A JPEG (or, with marker 0xF7, JPEG-LS) codestream that stops after its frame header:
    what a check of the frame's size reads, with nothing to decode."""
    import struct

    sof = struct.pack(">BHHB", precision, height, width, components)
    sof += b"".join(bytes([index + 1, 0x11, 0]) for index in range(components))
    app = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\x01\x01" + b"\0" * 7
    return (b"\xff\xd8" + app + b"\xff\xff"  # a fill byte before the next marker
            + bytes([0xFF, marker]) + struct.pack(">H", 2 + len(sof)) + sof + b"\xff\xd9")


def first_frame(data: bytes) -> bytes:
    """The first encoded frame of an encapsulated DICOM file."""
    import pydicom
    from pydicom.encaps import get_frame

    ds = pydicom.dcmread(io.BytesIO(data))
    return bytes(get_frame(ds.PixelData, 0, number_of_frames=1))
