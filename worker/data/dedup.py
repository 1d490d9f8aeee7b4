"""Near-duplicate radiographs (the same film re-encoded, resized or re-cropped) found by hashing.

Each image gets a 64-bit perceptual hash (``imagehash.phash``) and difference hash
(``imagehash.dhash``) of its grayscale pixels, of the whole frame and of three centre crops
keeping 96/92/88 % of each side. Per hash kind, the distance of two images is the smallest
Hamming distance of whole frame to whole frame, or of one's whole frame to a crop of the
other (a re-cropped copy is a zoomed one); the pair's distance is the larger over the two
kinds, so a pair is close only when BOTH hashes agree. Close pairs are joined transitively
(connected components), so every chain of copies ends in one group.

Both hashes must agree, and crops are compared, because chest films look alike at 32x32:
one hash alone, or whole frames alone, merges different films or misses re-cropped copies
(the measurements behind ``max_distance`` 4 are in ``bench/results/findings.md``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from shared.ml.preprocessing import decode_grayscale
from worker.data.splits import connected_groups

DEFAULT_MAX_DISTANCE = 4
DEFAULT_KINDS = ("phash", "dhash")
# Fractions of each side kept by the centre crops; 1.0 (the whole frame) must come first.
DEFAULT_ZOOMS = (1.0, 0.96, 0.92, 0.88)
HASHES: dict[str, Callable[..., imagehash.ImageHash]] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
}
# Rows of the distance matrix computed at once: peak memory ~8 B * rows * images * zooms
# (60 MB for 3,738 images).
BLOCK_ROWS = 512


@dataclass(frozen=True)
class GroupSummary:
    """How much a grouping merged: groups with more than one image and the images in them."""

    groups: int
    merged_groups: int
    images_merged: int
    largest: int


def _center_crop(image: Image.Image, keep: float) -> Image.Image:
    if keep >= 1.0:
        return image
    width, height = image.size
    dx, dy = round(width * (1 - keep) / 2), round(height * (1 - keep) / 2)
    return image.crop((dx, dy, width - dx, height - dy))


def _hash_one(path: Path, hash_size: int, kinds: Sequence[str],
              zooms: Sequence[float]) -> np.ndarray:
    # The serving decoder: same EXIF handling and 16-bit scaling as the model sees.
    gray = decode_grayscale(path.read_bytes())
    image = Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), mode="L")
    return np.array([[HASHES[kind](_center_crop(image, keep), hash_size).hash.ravel()
                      for keep in zooms] for kind in kinds], dtype=bool)


def hash_images(paths: Sequence[Path], hash_size: int = 8,
                kinds: Sequence[str] = DEFAULT_KINDS, zooms: Sequence[float] = DEFAULT_ZOOMS,
                workers: int | None = None) -> np.ndarray:
    """Hash bits of every image: a bool array (images, kinds, zooms, hash_size**2)."""
    if not zooms or zooms[0] != 1.0:
        raise ValueError("zooms must start with 1.0 (the whole frame)")
    unknown = set(kinds) - set(HASHES)
    if unknown or not kinds:
        raise ValueError(f"unknown hash kinds {sorted(unknown)}; choose from {sorted(HASHES)}")
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(lambda p: _hash_one(p, hash_size, kinds, zooms), paths))
    shape = (0, len(kinds), len(zooms), hash_size * hash_size)
    return np.stack(rows) if rows else np.zeros(shape, dtype=bool)


def distance_blocks(bits: np.ndarray,
                    block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, distances of those rows to every image) over the whole matrix.

    Hamming distance from +-1 vectors is (bits - dot) / 2, so each block is a few matrix
    products instead of 7M Python comparisons.
    """
    n, kinds, zooms, nbits = bits.shape
    signs = bits.astype(np.float32) * 2 - 1
    columns = [np.ascontiguousarray(signs[:, k, 0]) for k in range(kinds)]
    flat = [signs[:, k].reshape(n * zooms, nbits) for k in range(kinds)]
    for start in range(0, n, block_rows):
        rows = signs[start:start + block_rows]
        combined = np.zeros((len(rows), n), dtype=np.float32)
        for k in range(kinds):
            # Row's crops against whole columns, and whole rows against columns' crops.
            crops_vs_whole = (rows[:, k].reshape(-1, nbits) @ columns[k].T).reshape(-1, zooms, n)
            whole_vs_crops = (rows[:, k, 0] @ flat[k].T).reshape(-1, n, zooms)
            best = np.maximum(crops_vs_whole.max(axis=1), whole_vs_crops.max(axis=2))
            combined = np.maximum(combined, (nbits - best) / 2)
        yield start, np.rint(combined).astype(np.int16)


def close_pairs(bits: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose combined hash distance is at most ``max_distance``."""
    firsts, seconds = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start, block in distance_blocks(bits):
        rows, cols = np.nonzero(block <= max_distance)
        rows += start
        keep = cols > rows
        firsts.append(rows[keep])
        seconds.append(cols[keep])
    return np.concatenate(firsts), np.concatenate(seconds)


def group_hashes(bits: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Group ids (numbered by first appearance) joining close pairs transitively."""
    first, second = close_pairs(bits, max_distance)
    return connected_groups(len(bits), first, second)


def near_duplicate_groups(paths: list[Path], max_distance: int = DEFAULT_MAX_DISTANCE,
                          hash_size: int = 8) -> list[int]:
    """A group id per path; near-duplicate images share one (see the module docstring).

    ``max_distance`` is in bits and was calibrated for ``hash_size=8`` (64-bit hashes).
    """
    groups = group_hashes(hash_images(paths, hash_size), max_distance)
    return [int(g) for g in groups]


def summarize_groups(groups: Sequence[int] | np.ndarray) -> GroupSummary:
    """Count the groups, those with several images, the images in them and the largest."""
    sizes = np.bincount(np.unique(np.asarray(groups), return_inverse=True)[1].ravel())
    merged = sizes[sizes > 1]
    return GroupSummary(groups=int(len(sizes)), merged_groups=int(len(merged)),
                        images_merged=int(merged.sum()), largest=int(sizes.max(initial=0)))
