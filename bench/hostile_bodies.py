"""The hostile requests of bench/hostile_inputs.py's round 3, one builder each: protocol JSON
and binary bodies, DICOM files larger than their header says, huge and extreme-aspect PNGs,
and the runs (issue 27's items) that send them.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image
from probing import MiB, Request

# /predict and the protocol's infer take CXR_MAX_IMAGE_BYTES (its default) and some framing:
# the hostile bodies stay 1% under it, so that no size check refuses them.
BODY_BYTES = int(32 * MiB * 0.99)
CONCURRENT = 4
INFER = "/v2/models/cxr/infer"


# -- the bodies, one builder each ---------------------------------------------------------------
def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def infer_json(item: bytes) -> bytes:
    """An infer body just under the limit whose one image's data is ``item`` repeated."""
    head = b'{"inputs":[{"name":"IMAGE","shape":[1],"datatype":"BYTES","data":['
    tail = b"]}]}"
    count = (BODY_BYTES - len(head) - len(tail) + 1) // (len(item) + 1)
    return head + b",".join([item] * count) + tail


def infer_binary(shape_is_count: bool) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor infer body just under the limit, all of it 4-byte zero lengths (empty
    elements), and its headers; the shape counts them all, or says one."""
    size = (BODY_BYTES - 256) // 4 * 4
    head = json.dumps({"inputs": [{
        "name": "IMAGE", "shape": [size // 4 if shape_is_count else 1], "datatype": "BYTES",
        "parameters": {"binary_data_size": size}}]}).encode()
    return head + bytes(size), {"Inference-Header-Content-Length": str(len(head)),
                                "Content-Type": "application/octet-stream"}


def infer_film(film: bytes) -> bytes:
    """A valid infer body: one real film, base64."""
    return json.dumps({"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES",
                                   "data": [base64.b64encode(film).decode()]}]}).encode()


def dicom(rows: int, columns: int, bits: int, syntax: str, pixels: bytes) -> bytes:
    """A one-sample MONOCHROME2 Part 10 file whose header describes rows x columns of
    ``bits`` bits and whose pixel data is ``pixels``, as is (encapsulated for a compressed
    ``syntax``); pydicom deflates the whole data set for the deflated syntax."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "DX", rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    compressed = meta.TransferSyntaxUID.is_compressed
    ds.add_new(0x7FE00010, "OB" if compressed else "OW", pixels)
    if compressed:
        ds["PixelData"].is_undefined_length = True
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_big_frame(side: int = 13000) -> bytes:
    """A 64x64 8-bit JPEG Baseline DICOM whose one frame is a side x side RGB JPEG of a few
    MB (a flat colour with blocks of light noise)."""
    from pydicom.encaps import encapsulate

    image = Image.new("RGB", (side, side), (118, 112, 104))
    noise = np.random.default_rng(0).integers(112, 124, (256, 256, 3), dtype=np.uint8)
    tile = Image.fromarray(noise)
    for y in range(0, side, 1000):
        for x in range(0, side, 1000):
            image.paste(tile, (x, y))
    frame = encoded(image, "JPEG")
    return dicom(64, 64, 8, "1.2.840.10008.1.2.4.50", encapsulate([frame]))


def dicom_deflated(side: int = 7000) -> bytes:
    """A side x side 12-bit DICOM, Deflated Explicit VR Little Endian, of flat-ish pixels."""
    pixels = np.full((side, side), 2000, dtype=np.uint16)
    pixels[::500, ::500] = 3000
    return dicom(side, side, 12, "1.2.840.10008.1.2.1.99", pixels.tobytes())


def flat_png(width: int, height: int) -> bytes:
    return encoded(Image.new("L", (width, height), 90))


# -- the requests and the runs that send them ---------------------------------------------------
def predict(image: bytes, kind: str, copies: int = 1) -> Request:
    name, media = {"png": ("hostile.png", "image/png"),
                   "dicom": ("hostile.dcm", "application/dicom")}[kind]
    return Request("/predict", files=[("file", (name, image, media))] * copies)


def infer(body: bytes, headers: dict[str, str] | None = None, path: str = INFER) -> Request:
    return Request(path, body, headers or {"Content-Type": "application/json"})


@dataclass(frozen=True)
class Fixture:
    film: bytes  # a real film: the small /predict and the version loads send it
    versions: list[str]  # published; the first active


class Run(NamedTuple):
    case: str  # the item, as --cases names it
    name: str
    build: Callable[[Fixture], list[Request]]  # the requests sent at once


RUNS = (
    Run("oip_json", "nested", lambda _: [infer(infer_json(b"[[[[[[[[[]]]]]]]]]"))] * CONCURRENT),
    Run("oip_json", "empty_lists", lambda _: [infer(infer_json(b"[]"))] * CONCURRENT),
    Run("oip_json", "empty_strings", lambda _: [infer(infer_json(b'""'))] * CONCURRENT),
    Run("oip_json", "binary_shape_n", lambda _: [infer(*infer_binary(True))] * CONCURRENT),
    Run("oip_json", "binary_shape_1", lambda _: [infer(*infer_binary(False))] * CONCURRENT),
    Run("dicom_frame", "64px_header_13000px_jpeg",
        lambda _: [predict(dicom_big_frame(), "dicom")] * CONCURRENT),
    Run("many_images", "32x7000px_png",
        lambda _: [predict(flat_png(7000, 7000), "png", 32)] * CONCURRENT),
    Run("version_loads", "48_infers_3_versions",
        lambda f: [infer(infer_film(f.film), path=f"/v2/models/cxr/versions/{v}/infer")
                   for v in (f.versions[1 + i % 3] for i in range(48))]),
    Run("dicom_deflate", "1x7000px", lambda _: [predict(dicom_deflated(), "dicom")]),
    Run("dicom_deflate", "4x7000px",
        lambda _: [predict(dicom_deflated(), "dicom")] * CONCURRENT),
    Run("aspect", "1x50M_png", lambda _: [predict(flat_png(1, 50_000_000), "png")] * CONCURRENT),
    Run("aspect", "50Mx1_png", lambda _: [predict(flat_png(50_000_000, 1), "png")] * CONCURRENT),
)

