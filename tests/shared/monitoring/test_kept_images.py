"""Kept images: pixels only, as PNG, written whole, filed into a dataset by label (a relabel
moves the copy), and removed with their records."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.datasets import discover
from shared.errors import PredictionNotFound
from shared.ml.preprocessing import decode_image
from shared.monitoring.kept_images import KeptImages, kept_pixels
from tests.helpers.dicom import MARKER_ID, MARKER_NAME, make_dicom


@pytest.fixture
def kept(tmp_path: Path) -> KeptImages:
    return KeptImages(tmp_path / "kept")


def _gradient(dtype: type[np.generic] = np.uint8, top: int = 255) -> np.ndarray:
    return np.linspace(0, top, 48 * 40).reshape(48, 40).astype(dtype)


def _png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _read(path: Path) -> tuple[str, np.ndarray, dict[str, object]]:
    with Image.open(path) as image:
        return image.mode, np.asarray(image), dict(image.info)


def test_an_image_is_kept_as_png_by_its_id(kept: KeptImages, tmp_path: Path) -> None:
    pixels = _gradient()
    path = kept.save("ab12cd", pixels)
    assert path == tmp_path / "kept" / "ab" / "ab12cd.png" and kept.path("ab12cd") == path
    mode, back, info = _read(path)
    assert mode == "L" and np.array_equal(back, pixels) and info == {}
    assert [p.name for p in path.parent.iterdir()] == ["ab12cd.png"]  # no temp file left
    deep = _gradient(np.uint16, 4095)
    mode, back, _ = _read(kept.save("ab12ce", deep))
    assert mode.startswith("I") and np.array_equal(back, deep)


def test_decoded_pixels_are_kept_without_the_dicom_header(kept: KeptImages) -> None:
    dicom = make_dicom(_gradient(np.uint16, 4095), bits_stored=12)
    decoded = decode_image(dicom)
    path = kept.save("dc0001", kept_pixels(decoded))
    stored = path.read_bytes()
    assert stored.startswith(b"\x89PNG")
    assert MARKER_NAME.encode() not in stored and MARKER_ID.encode() not in stored
    assert np.array_equal(_read(path)[1], np.rint(decoded.gray).astype(np.uint8))
    png = decode_image(_png_of(_gradient()))
    assert np.array_equal(_read(kept.save("pn0001", png.gray))[1], _gradient())


def test_refuses_what_is_not_a_gray_image_or_a_safe_id(kept: KeptImages) -> None:
    with pytest.raises(ValueError, match="HxW"):
        kept.save("ab12cd", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="not a prediction id"):
        kept.save("../escape", _gradient())
    assert kept.path("../escape") is None and kept.path("never-kept") is None


def test_a_label_files_the_image_and_a_relabel_moves_it(kept: KeptImages,
                                                        tmp_path: Path) -> None:
    dataset = tmp_path / "data" / "site-labels"
    kept.save("p0001", _gradient())
    kept.save("p0002", _gradient()[::-1].copy())
    first = kept.file_into("p0001", dataset, "COVID")
    kept.file_into("p0002", dataset, "Normal")
    assert first == dataset / "COVID" / "p0001.png"
    source = kept.path("p0001")
    assert source is not None and first.read_bytes() == source.read_bytes()
    moved = kept.file_into("p0001", dataset, "Normal")
    assert not first.exists() and moved == dataset / "Normal" / "p0001.png"
    assert kept.file_into("p0001", dataset, "Normal") == moved  # the same label again
    assert sorted(p.name for p in (dataset / "Normal").iterdir()) == ["p0001.png", "p0002.png"]
    kept.file_into("p0002", dataset, "COVID")
    assert discover(dataset).classes == ["COVID", "Normal"]
    with pytest.raises(PredictionNotFound):
        kept.file_into("p0003", dataset, "COVID")
    with pytest.raises(ValueError):
        kept.file_into("p0001", dataset, "../COVID")


def test_remove_deletes_the_kept_files(kept: KeptImages) -> None:
    for prediction_id in ("p0001", "p0002", "q0003"):
        kept.save(prediction_id, _gradient())
    assert kept.remove(["p0001", "q0003", "p0009", "../x"]) == 2
    assert (kept.path("p0001"), kept.path("q0003")) == (None, None)
    assert kept.path("p0002") is not None
    assert kept.remove([]) == 0
