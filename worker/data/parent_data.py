"""A parent version's own films, found again for its fine-tune: its training split, from
which images are replayed against forgetting, and its test split, on which the child must
not do worse. The split is made again from the parent's recorded request (seed, fractions,
groups) and accepted only if its test split has the recorded files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.datasets import aligned, combine, dataset_path, discover
from shared.errors import CxrError
from shared.manifest import Manifest
from worker.data.pipeline import Split, files_sha256, split_dataset


@dataclass(frozen=True)
class ParentData:
    """The parent's training and test splits, and the name of what they came from."""

    train: Split
    test: Split
    dataset: str


def find_parent_data(manifest: Manifest, data_dir: Path) -> ParentData | str:
    """The parent's splits, or why they cannot be had (its datasets gone or changed)."""
    params = manifest.training_params()
    if params is None or params.seed is None:
        return "the parent's manifest records no seeded training"
    names = [params.dataset, *params.datasets]
    try:
        dataset = combine([(name, discover(dataset_path(data_dir, name), 1)) for name in names])
    except CxrError as exc:
        return f"the parent's datasets are not all stored: {exc.message}"
    try:  # in the parent's order and spelling, as it was trained (a fine-tune's site too)
        dataset = aligned(dataset, list(manifest.classes), params.dataset)
    except CxrError:
        return "the parent's datasets now have other classes"
    if manifest.dataset.fingerprint and dataset.fingerprint() != manifest.dataset.fingerprint:
        return "the parent's datasets changed since it was trained"
    groups_csv = dataset.root / params.groups_csv if params.groups_csv else None
    splits, _ = split_dataset(dataset, params.validation_fraction, params.test_fraction,
                              params.seed, groups_csv, params.group_column,
                              params.group_by_source, params.holdout_source)
    recorded = manifest.split.test.files_sha256 if manifest.split.test else None
    if recorded is None or files_sha256(splits["test"], list(manifest.classes)) != recorded:
        return "the parent's test split could not be made again as it was recorded"
    return ParentData(splits["train"], splits["test"], "+".join(names))


def replay_sample(pool: Split, site_images: int, fraction: float, seed: int,
                  source: str) -> Split:
    """Images of the parent's training split to train on beside ``site_images`` of the
    site's, so that they are ``fraction`` of the training images; each recorded as from
    ``source``."""
    wanted = round(site_images * fraction / (1 - fraction)) if fraction else 0
    count = min(wanted, len(pool.labels))
    picks = np.sort(np.random.default_rng(seed).choice(len(pool.labels), count, replace=False))
    return Split([pool.paths[i] for i in picks], pool.labels[picks], [source] * count)
