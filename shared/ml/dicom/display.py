"""Stored pixels to the float [0, 255] display image, in tiles reduced as they go, so that no
full-size float copy exists: modality LUT, VOI LUT or window, MONOCHROME1 inverted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from shared.errors import CxrError, InvalidImage
from shared.ml.dicom.checks import malformed

# Pixels per tile of the display transforms, each of which holds a few float64 copies.
TILE_PIXELS = 2**18

Factors = tuple[int, int]  # a box reduction (along x, along y); (1, 1) for none


@dataclass(frozen=True)
class DicomImage:
    """A checked DICOM file's stored pixels (rows x columns) and the header that maps them.

    Native pixels are a view of the file (or of its inflated dataset), so the unused high
    bits (``BitsAllocated - BitsStored``, which pydicom clears on a copy) are cleared tile by
    tile as they are displayed."""

    ds: Any
    stored: np.ndarray
    unused_bits: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.stored.shape
        return int(rows), int(columns)

    def display(self, factors: Factors = (1, 1)) -> np.ndarray:
        """The float32 [0, 255] display image, box-reduced by ``factors`` on the way."""
        try:
            return _display(self.stored, self.ds, factors, self.unused_bits)
        except CxrError:
            raise
        except Exception as exc:  # as in open_dicom: any element pydicom reads may be damaged
            raise malformed(exc) from exc


def _display(stored: np.ndarray, ds: Any, factors: Factors, unused_bits: int) -> np.ndarray:
    """``to_display`` tile by tile, each box-reduced (tiles are whole boxes, so the result is
    that of reducing the whole image): the full-size float image never exists."""
    fx, fy = factors
    rows, columns = stored.shape
    out = np.empty((-(-rows // fy), -(-columns // fx)), np.float32)
    height, width = tile_shape((rows, columns), factors)
    for top in range(0, rows, height):
        for left in range(0, columns, width):
            tile = stored[top:top + height, left:left + width]
            if unused_bits:  # as pydicom's correct_unused_bits does, on the tile's copy
                tile = np.right_shift(np.left_shift(tile, unused_bits), unused_bits)
            tile = to_display(tile, ds)
            if not np.isfinite(tile).all():
                raise InvalidImage("the DICOM header's rescale or window values give "
                                   "non-finite pixels")
            if (fx, fy) != (1, 1):
                tile = np.asarray(Image.fromarray(tile).reduce((fx, fy)), np.float32)
            out[top // fy:top // fy + tile.shape[0],
                left // fx:left // fx + tile.shape[1]] = tile
    return out


def tile_shape(shape: tuple[int, int], factors: Factors) -> tuple[int, int]:
    """Rows and columns of the display transforms' tiles: about ``TILE_PIXELS``, whole rows
    where they fit, and whole boxes of the reduction."""
    (rows, columns), (fx, fy) = shape, factors
    width = columns if columns * fy <= TILE_PIXELS else max(fx, TILE_PIXELS // fy // fx * fx)
    return min(rows, max(fy, TILE_PIXELS // width // fy * fy)), width


def to_display(stored: np.ndarray, ds: Any) -> np.ndarray:
    """Stored values to [0, 255]: modality LUT, VOI LUT or window, MONOCHROME1 inverted.

    Each pixel on its own (the range is the header's), so tiles give what the whole gives."""
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
