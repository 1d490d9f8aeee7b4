"""Kept images (CXR_KEEP_IMAGES=true): each answered image's decoded pixels as a grayscale PNG,
named by its prediction id, for the prediction log's retention, so that a label can file it
into a dataset. Pixels only: a DICOM's header (which carries patient data) never reaches a
kept file, nor does any metadata of the file sent.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from shared.errors import PredictionNotFound
from shared.ml.preprocessing import DecodedImage

# A prediction id becomes a file name: nothing that could climb out of a folder.
_ID = re.compile(r"^[A-Za-z0-9_-]{2,128}$")


def kept_pixels(image: DecodedImage) -> np.ndarray:
    """The pixels to keep of a decoded image: its gray values (before any resizing for the
    model), rounded to 8 bits."""
    pixels: np.ndarray = np.rint(np.clip(image.gray, 0, 255)).astype(np.uint8)
    return pixels


def _write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Write through a hidden temp file beside ``target``: a reader (or a dataset scan) sees
    the whole file or none of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temp))
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class KeptImages:
    """The kept PNGs under ``root``, in folders by the id's first two characters (so that no
    folder holds every image)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, prediction_id: str) -> Path:
        if not _ID.match(prediction_id):
            raise ValueError(f"{prediction_id!r} is not a prediction id")
        return self.root / prediction_id[:2] / f"{prediction_id}.png"

    def save(self, prediction_id: str, gray: np.ndarray) -> Path:
        """Keep an HxW image: uint16 as a 16-bit PNG, uint8 as 8-bit, and float values on
        0..255 rounded to 8 bits. No metadata is written."""
        if gray.ndim != 2:
            raise ValueError(f"a kept image is HxW gray, not of shape {gray.shape}")
        if gray.dtype != np.uint16:
            gray = np.rint(np.clip(gray, 0, 255)).astype(np.uint8)
        image = Image.fromarray(gray)
        target = self._file(prediction_id)
        _write_atomically(target, lambda temp: image.save(temp, format="PNG"))
        return target

    def path(self, prediction_id: str) -> Path | None:
        """The kept PNG of a prediction; None when its image was not kept (or is gone)."""
        try:
            target = self._file(prediction_id)
        except ValueError:
            return None
        return target if target.is_file() else None

    def remove(self, ids: Iterable[str]) -> int:
        """Delete the kept PNGs of these predictions; returns how many there were."""
        removed = 0
        for prediction_id in ids:
            target = self.path(prediction_id)
            if target is not None:
                target.unlink(missing_ok=True)
                removed += 1
        return removed

    def file_into(self, prediction_id: str, dataset_dir: Path, class_name: str) -> Path:
        """Copy a kept image into ``dataset_dir/<class_name>/<id>.png``, removing a copy filed
        under another class (a relabel moves it). PredictionNotFound when not kept."""
        if class_name in ("", ".", "..") or "/" in class_name or "\\" in class_name:
            raise ValueError(f"{class_name!r} is not a class folder name")
        source = self.path(prediction_id)
        if source is None:
            raise PredictionNotFound(f"the image of prediction {prediction_id!r} was not kept")
        target = dataset_dir / class_name / source.name
        _write_atomically(target, lambda temp: shutil.copyfile(source, temp))
        for earlier in dataset_dir.glob(f"*/{source.name}"):
            if earlier != target:
                earlier.unlink(missing_ok=True)
        return target
