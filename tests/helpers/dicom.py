"""DICOM files written with pydicom from real pixels, as a modality would send them."""

from __future__ import annotations

import io
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
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
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
