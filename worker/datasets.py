"""Turning a discovered dataset into split arrays and ``tf.data`` pipelines for training."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.datasets import Dataset
from shared.preprocessing import PreprocessOptions, load_pixels, to_model_input
from worker.dedup import DEFAULT_MAX_DISTANCE, near_duplicate_groups, summarize_groups
from worker.splits import combine_groups, grouped_stratified_split, groups_from_csv

if TYPE_CHECKING:
    import tensorflow as tf

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    """File paths and integer labels of one split."""

    paths: list[Path]
    labels: np.ndarray


def split_dataset(dataset: Dataset, validation: float, test: float, seed: int,
                  groups_csv: Path | None = None,
                  group_column: str = "patient_id") -> tuple[dict[str, Split], dict[str, Any]]:
    """A seeded, per-class stratified split in which near-duplicate images (and, with a CSV,
    images of one patient) always fall in the same split."""
    paths = [path for files in dataset.files.values() for path in files]
    labels = np.array([i for i, files in enumerate(dataset.files.values()) for _ in files],
                      dtype=np.int32)
    duplicates = np.asarray(near_duplicate_groups(paths))
    groups = duplicates
    if groups_csv is not None:
        groups = combine_groups(duplicates, groups_from_csv(groups_csv, paths, group_column))
    index = grouped_stratified_split(labels, groups, validation, test, seed)
    splits = {name: Split([paths[i] for i in index[name]], labels[index[name]])
              for name in SPLITS}
    found = summarize_groups(duplicates)
    details = {"method": f"stratified, grouped by near-duplicates (phash+dhash <= "
                         f"{DEFAULT_MAX_DISTANCE} bits)" + (", and by patient" if groups_csv
                                                            else ""),
               "duplicate_groups": found.merged_groups,
               "images_in_duplicate_groups": found.images_merged,
               "group_key": f"{groups_csv.name}:{group_column}" if groups_csv else None}
    return splits, details


def split_summary(splits: dict[str, Split], classes: list[str], seed: int) -> dict[str, Any]:
    """What the manifest records: seed, per-class counts and a hash of each split's files."""
    summary: dict[str, Any] = {"seed": seed}
    for name, split in splits.items():
        counts = np.bincount(split.labels, minlength=len(classes))
        pairs = zip(split.paths, split.labels, strict=True)
        names = "\n".join(sorted(f"{classes[y]}/{p.name}" for p, y in pairs))
        summary[name] = {
            "counts": dict(zip(classes, counts.tolist(), strict=True)),
            "files_sha256": hashlib.sha256(names.encode()).hexdigest(),
        }
    return summary


def load_split_pixels(split: Split, size: int, max_pixels: int,
                      options: PreprocessOptions | None = None) -> np.ndarray:
    """Decode and prepare every image of a split with the shared serving path."""
    def one(path: Path) -> np.ndarray:
        return load_pixels(path.read_bytes(), size, max_pixels, options)

    with ThreadPoolExecutor(max_workers=4) as pool:
        images = list(pool.map(one, split.paths))
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.float32)


def augmentation(seed: int) -> Any:
    """The paper's augmentation with Keras preprocessing layers (train batches only).

    Rotation up to 20 degrees, zoom 0.2, width/height shift 0.1, horizontal flip, no vertical
    flip; edges filled with the nearest pixel, as ImageDataGenerator did by default.
    """
    import keras

    return keras.Sequential([
        keras.layers.RandomRotation(20 / 360, fill_mode="nearest", seed=seed),
        keras.layers.RandomZoom(0.2, fill_mode="nearest", seed=seed + 1),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 2),
        keras.layers.RandomFlip("horizontal", seed=seed + 3),
    ], name="augmentation")


def make_pipeline(pixels: np.ndarray, labels: np.ndarray, batch_size: int, *,
                  augment: Any = None, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches of (model input, label); augmentation before the shared VGG16 scaling."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((pixels, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, y: (to_model_input(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
