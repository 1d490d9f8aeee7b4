"""Turning a discovered dataset into split arrays and ``tf.data`` pipelines for training."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.datasets import Dataset
from shared.manifest import SplitPart, SplitRecord
from shared.ml.preprocessing import PreprocessOptions, load_pixels, to_model_input
from worker.data.dedup import DEFAULT_MAX_DISTANCE, near_duplicate_groups, summarize_groups
from worker.data.splits import combine_groups, grouped_stratified_split, groups_from_csv

if TYPE_CHECKING:
    import tensorflow as tf

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    """File paths and integer labels of one split, and each image's source dataset when
    several were combined."""

    paths: list[Path]
    labels: np.ndarray
    sources: list[str] = field(default_factory=list)


def split_dataset(dataset: Dataset, validation: float, test: float, seed: int,
                  groups_csv: Path | None = None, group_column: str = "patient_id",
                  group_by_source: bool = False,
                  holdout_source: str | None = None) -> tuple[dict[str, Split], dict[str, Any]]:
    """A seeded, per-class stratified split in which near-duplicate images (and, with a CSV,
    images of one patient; with ``group_by_source``, of one source) always fall in the same
    split. With ``holdout_source`` the test split is that source's images, and images of the
    others that are near-duplicates of one of them are left out."""
    paths = [path for files in dataset.files.values() for path in files]
    labels = np.array([i for i, files in enumerate(dataset.files.values()) for _ in files],
                      dtype=np.int32)
    sources = [dataset.sources.get(path, "") for path in paths] if dataset.sources else []
    duplicates = np.asarray(near_duplicate_groups(paths))
    groupings = [duplicates]
    if groups_csv is not None:
        groupings.append(groups_from_csv(groups_csv, paths, group_column))
    if group_by_source and sources:
        groupings.append(np.unique(sources, return_inverse=True)[1])
    groups = combine_groups(*groupings) if len(groupings) > 1 else duplicates
    left_out = 0
    if holdout_source is None:
        index = grouped_stratified_split(labels, groups, validation, test, seed)
    else:
        index, left_out = _hold_out(labels, groups, np.array(sources) == holdout_source,
                                    validation, test, seed)
    splits = {name: Split([paths[i] for i in index[name]], labels[index[name]],
                          [sources[i] for i in index[name]] if sources else [])
              for name in SPLITS}
    found = summarize_groups(duplicates)
    method = (f"stratified, grouped by near-duplicates (phash+dhash <= {DEFAULT_MAX_DISTANCE} "
              "bits)" + (", and by patient" if groups_csv else "")
              + (", and by source" if group_by_source and sources else ""))
    details = {"method": method + (f"; test split: source {holdout_source!r}"
                                   if holdout_source else ""),
               "duplicate_groups": found.merged_groups,
               "images_in_duplicate_groups": found.images_merged,
               "group_key": f"{groups_csv.name}:{group_column}" if groups_csv else None}
    if holdout_source is not None:
        details |= {"holdout_source": holdout_source, "left_out_near_duplicates": left_out}
    return splits, details


def _hold_out(labels: np.ndarray, groups: np.ndarray, held: np.ndarray, validation: float,
              test: float, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """Test: the held-out source. Train and validation: the rest, split as usual (its own
    test share joins train), without images that share a group with a held-out one."""
    if not held.any():
        raise ValueError("the held-out source has no images (is it one of the datasets?)")
    leaking = ~held & np.isin(groups, groups[held])
    rest = np.flatnonzero(~held & ~leaking)
    if len(rest) == 0:
        raise ValueError("nothing is left to train on beside the held-out source")
    inner = grouped_stratified_split(labels[rest], groups[rest], validation, test, seed)
    index = {"train": np.sort(np.concatenate([rest[inner["train"]], rest[inner["test"]]])),
             "validation": rest[inner["validation"]], "test": np.flatnonzero(held)}
    return index, int(leaking.sum())


def files_sha256(split: Split, classes: list[str]) -> str:
    """A hash of a split's files by class and name, whatever folder they are read from."""
    pairs = zip(split.paths, split.labels, strict=True)
    names = "\n".join(sorted(f"{classes[y]}/{p.name}" for p, y in pairs))
    return hashlib.sha256(names.encode()).hexdigest()


def split_summary(splits: dict[str, Split], classes: list[str], seed: int,
                  details: dict[str, Any], class_weights: dict[int, float] | None) -> SplitRecord:
    """What the manifest records: seed, how the split was made (``details`` from
    ``split_dataset``), per-class counts and a hash of each split's files (and, with several
    sources, the images of each source)."""
    parts: dict[str, SplitPart] = {}
    for name, split in splits.items():
        counts = np.bincount(split.labels, minlength=len(classes))
        parts[name] = SplitPart(
            counts=dict(zip(classes, counts.tolist(), strict=True)),
            files_sha256=files_sha256(split, classes),
            sources={s: split.sources.count(s) for s in sorted(set(split.sources))}
            if split.sources else None)
    return SplitRecord.model_validate(
        {"seed": seed, **details, **parts, "class_weights": class_weights})


def load_split_pixels(split: Split, size: int, max_pixels: int,
                      options: PreprocessOptions | None = None) -> np.ndarray:
    """Decode and prepare every image of a split with the shared serving path."""
    def one(path: Path) -> np.ndarray:
        return load_pixels(path.read_bytes(), size, max_pixels, options)

    with ThreadPoolExecutor(max_workers=4) as pool:
        images = list(pool.map(one, split.paths))
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.float32)


def augmentation(seed: int, intensity: bool = False) -> Any:
    """The paper's augmentation with Keras preprocessing layers (train batches only).

    Rotation up to 20 degrees, zoom 0.2, width/height shift 0.1, horizontal flip, no vertical
    flip; edges filled with the nearest pixel, as ImageDataGenerator did by default. With
    ``intensity``, also what differs between hospitals' films rather than between diseases:
    exposure, contrast, gamma, blur and noise (``intensity_layers``).
    """
    import keras

    layers = [
        keras.layers.RandomRotation(20 / 360, fill_mode="nearest", seed=seed),
        keras.layers.RandomZoom(0.2, fill_mode="nearest", seed=seed + 1),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 2),
        keras.layers.RandomFlip("horizontal", seed=seed + 3),
    ]
    if intensity:
        layers += intensity_layers(seed + 4)
    return keras.Sequential(layers, name="augmentation")


def intensity_layers(seed: int) -> list[Any]:
    """Exposure (+-15% of the range), contrast (+-30%), gamma (0.67..1.5), Gaussian blur
    (sigma up to 1 pixel) and sensor noise (5 grey levels), on pixels in 0..255."""
    import keras

    return [
        keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed),
        keras.layers.RandomContrast(0.3, value_range=(0, 255), seed=seed + 1),
        keras.layers.RandomGaussianBlur(factor=(0.0, 1.0), kernel_size=3, sigma=(0.1, 1.0),
                                        value_range=(0, 255), seed=seed + 3),
        gamma_and_noise(float(np.log(1.5)), 5.0, seed=seed + 2),
    ]


def _gamma_and_noise_layer() -> type:
    import keras

    class GammaAndNoise(keras.layers.Layer):
        """Per image: ``255 * (x / 255) ** g`` with ``log g`` uniform in +-``max_log``, then
        Gaussian noise of a standard deviation uniform in 0..``max_noise`` grey levels (the
        same in the three channels: the image stays grey), clipped to 0..255. Keras has no
        gamma layer, and its GaussianNoise takes a fixed deviation of at most 1."""

        def __init__(self, max_log: float, max_noise: float, seed: int | None = None,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.max_log, self.max_noise = float(max_log), float(max_noise)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, x: Any, training: bool = True) -> Any:
            if not training:
                return x
            shape = keras.ops.shape(x)
            per_image = (shape[0], 1, 1, 1)
            gamma = keras.ops.exp(keras.random.uniform(per_image, -self.max_log, self.max_log,
                                                       seed=self.seed_generator))
            sigma = keras.random.uniform(per_image, 0.0, self.max_noise,
                                         seed=self.seed_generator)
            noise = keras.random.normal((shape[0], shape[1], shape[2], 1),
                                        seed=self.seed_generator)
            x = 255.0 * keras.ops.power(keras.ops.clip(x, 0.0, 255.0) / 255.0, gamma)
            return keras.ops.clip(x + sigma * noise, 0.0, 255.0)

    return GammaAndNoise


def gamma_and_noise(max_log: float, max_noise: float, seed: int | None = None) -> Any:
    """The gamma and noise layer (its class made lazily: Keras is for training processes)."""
    return _gamma_and_noise_layer()(max_log, max_noise, seed=seed, name="gamma_and_noise")


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
