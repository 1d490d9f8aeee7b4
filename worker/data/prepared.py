"""A dataset split and decoded once per job: what training fits and evaluation scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.datasets import Dataset
from shared.errors import InvalidDataset
from shared.training_params import TrainingParams
from worker.data.parent_data import replay_sample
from worker.data.pipeline import Split, load_split_pixels, make_pipeline, split_dataset


def replica_batch(requested: int, images: int, replicas: int) -> int:
    """The global batch for a split of ``images``: with several replicas, a multiple of their
    count and no larger than the split, so every replica's slice of a split's first batch has
    the same shape (Keras 3 builds the model from a cross-replica mean of that batch, which
    fails on uneven slices: keras-team/keras#19246). One replica: ``requested`` as is."""
    if replicas <= 1:
        return requested
    batch = max(replicas, requested - requested % replicas)
    return min(batch, max(replicas, images - images % replicas))


@dataclass
class Prepared:
    """The split, its decoded pixels and the pipelines built on them."""

    splits: dict[str, Split]
    details: dict[str, Any]
    arrays: dict[str, np.ndarray]
    replicas: int = 1  # batches are global: split across the strategy's replicas

    def labels(self, name: str) -> np.ndarray:
        return self.splits[name].labels

    def batch(self, name: str, batch_size: int) -> int:
        return replica_batch(batch_size, len(self.labels(name)), self.replicas)

    def pipeline(self, name: str, batch_size: int, augment: Any = None,
                 seed: int | None = None) -> Any:
        return make_pipeline(self.arrays[name], self.splits[name].labels,
                             self.batch(name, batch_size), augment=augment, shuffle_seed=seed)

    def model_inputs(self, name: str, count: int) -> np.ndarray:
        """The model's input for the split's first ``count`` images, as its pipeline makes
        it."""
        batch = make_pipeline(self.arrays[name][:count], self.labels(name)[:count], count)
        return np.asarray(next(iter(batch))[0])


def with_replay(train: Split, pool: Split | None, params: TrainingParams, seed: int,
                source: str) -> Split:
    """The training split and, for a fine-tune, images of its parent's training split
    (``pool``) to make ``params.replay_fraction`` of it, each image's source recorded."""
    if pool is None or not params.replay_fraction:
        return train
    replay = replay_sample(pool, len(train.labels), params.replay_fraction, seed, source)
    own = train.sources or [params.dataset] * len(train.labels)
    return Split(train.paths + replay.paths, np.concatenate([train.labels, replay.labels]),
                 own + replay.sources)


def prepare_data(dataset: Dataset, params: TrainingParams, seed: int,
                 max_pixels: int, replicas: int = 1, replay: Split | None = None,
                 replay_source: str = "parent") -> Prepared:
    """Split (grouped by near-duplicates and, optionally, patients) and decode; a fine-tune's
    training split also replays images of ``replay``, its parent's training split."""
    groups_csv = dataset.root / params.groups_csv if params.groups_csv else None
    if groups_csv is not None and not groups_csv.is_file():
        raise InvalidDataset(f"groups_csv {params.groups_csv!r} is not in the dataset folder")
    try:
        splits, details = split_dataset(dataset, params.validation_fraction,
                                        params.test_fraction, seed, groups_csv,
                                        params.group_column, params.group_by_source,
                                        params.holdout_source)
    except ValueError as exc:
        raise InvalidDataset(str(exc)) from exc
    splits["train"] = with_replay(splits["train"], replay, params, seed, replay_source)
    arrays = {name: load_split_pixels(split, params.image_size, max_pixels,
                                      params.preprocess_options)
              for name, split in splits.items()}
    return Prepared(splits, details, arrays, replicas)
