"""Grouped stratified splits: no leaking group, class balance, seeds, CSV and merged groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.images import plant_copies, random_real_images
from worker.data.dedup import near_duplicate_groups
from worker.data.splits import (
    SPLITS,
    combine_groups,
    connected_groups,
    grouped_stratified_split,
    groups_from_csv,
)

FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}


def synthetic(seed: int = 0, n_groups: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of groups of 1-6 images; a few groups carry one image of another class."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for group in range(n_groups):
        size = int(rng.integers(1, 7))
        label = group % 3
        members = [label] * size
        if size > 2 and rng.random() < 0.1:
            members[-1] = (label + 1) % 3
        labels += members
        groups += [group] * size
    order = rng.permutation(len(labels))  # groups need not be contiguous
    return np.array(labels)[order], np.array(groups)[order] * 7 + 100


def assert_no_group_spans_splits(splits: dict[str, np.ndarray], groups: np.ndarray) -> None:
    seen: dict[int, str] = {}
    for name, indices in splits.items():
        for group in np.unique(groups[indices]).tolist():
            assert seen.setdefault(group, name) == name, f"group {group} in {seen[group]}, {name}"


def test_every_image_once_and_no_group_across_splits() -> None:
    labels, groups = synthetic()
    splits = grouped_stratified_split(labels, groups, 0.15, 0.15, seed=1)
    assert tuple(splits) == SPLITS
    everything = np.concatenate(list(splits.values()))
    assert sorted(everything.tolist()) == list(range(len(labels)))
    assert_no_group_spans_splits(splits, groups)


def test_class_proportions_follow_the_fractions() -> None:
    labels, groups = synthetic()
    splits = grouped_stratified_split(labels, groups, 0.15, 0.15, seed=1)
    for cls in range(3):
        total = int(np.sum(labels == cls))
        for name, indices in splits.items():
            share = np.sum(labels[indices] == cls) / total
            # Groups hold up to 6 images of ~350 per class: within 3 points of the target.
            assert abs(share - FRACTIONS[name]) <= 0.03, (cls, name, share)


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels, groups = synthetic()
    first = grouped_stratified_split(labels, groups, 0.15, 0.15, seed=4)
    again = grouped_stratified_split(labels, groups, 0.15, 0.15, seed=4)
    other = grouped_stratified_split(labels, groups, 0.15, 0.15, seed=5)
    assert all(np.array_equal(first[name], again[name]) for name in SPLITS)
    assert not np.array_equal(first["test"], other["test"])


def test_three_groups_per_class_reach_every_split() -> None:
    labels = np.array([0] * 10 + [0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    groups = np.array([0] * 10 + [1, 2, 3, 3, 3, 4, 5, 6, 7, 8])
    splits = grouped_stratified_split(labels, groups, 0.2, 0.2, seed=0)
    for name, indices in splits.items():
        assert set(labels[indices].tolist()) == {0, 1, 2}, name
    assert_no_group_spans_splits(splits, groups)


def test_too_few_groups_or_bad_fractions_raise() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    groups = np.array([0, 1, 2, 3, 3, 4, 4])  # class 1 has only two groups
    with pytest.raises(ValueError, match=r"class 1 is the majority class of only 2 group"):
        grouped_stratified_split(labels, groups, 0.2, 0.2, seed=0)
    ok_groups = np.arange(7)
    for validation, test in [(0.0, 0.2), (0.5, 0.5), (0.2, -0.1)]:
        with pytest.raises(ValueError, match="validation"):
            grouped_stratified_split(labels, ok_groups, validation, test, seed=0)
    with pytest.raises(ValueError, match="same length"):
        grouped_stratified_split(labels, ok_groups[:3], 0.2, 0.2, seed=0)


def test_planted_duplicates_of_real_images_stay_in_one_split(radiography_root: Path,
                                                              tmp_path: Path) -> None:
    real = random_real_images(radiography_root, 150, seed=3)
    originals = real[::10]
    copies = plant_copies(originals, tmp_path / "copies", seed=2)
    paths = real + [path for path, _, _ in copies]
    labels = np.array([p.parent.parent.name for p in real]
                      + [originals[i].parent.parent.name for _, _, i in copies])
    groups = np.array(near_duplicate_groups(paths))
    splits = grouped_stratified_split(labels, groups, 0.2, 0.2, seed=0)
    assert_no_group_spans_splits(splits, groups)
    split_of = {int(i): name for name, indices in splits.items() for i in indices}
    for k, (_, kind, index) in enumerate(copies):
        if kind != "crop":  # crops are found ~95 % of the time, JPEG and resize always
            assert split_of[len(real) + k] == split_of[real.index(originals[index])]


def test_groups_from_csv_by_name_or_relative_path(tmp_path: Path) -> None:
    paths = [tmp_path / "COVID" / "images" / f"COVID-{i}.png" for i in range(4)]
    paths.append(tmp_path / "Normal" / "images" / "Normal-1.png")
    csv_path = tmp_path / "patients.csv"
    csv_path.write_text("file,patient\nCOVID-0.png,p1\nCOVID/images/COVID-2.png,p1\n"
                        "Normal/images/Normal-1.png,p2\nCOVID-3.png,\n", encoding="utf-8")
    groups = groups_from_csv(csv_path, paths, "patient")
    # 0 and 2 share p1; 1 is not listed and 3 has no id: each alone; 4 is p2.
    assert groups.tolist() == [0, 1, 0, 2, 3]
    with pytest.raises(ValueError, match="no column"):
        groups_from_csv(csv_path, paths, "subject")


def test_combining_patient_and_duplicate_groups_joins_components() -> None:
    patients = np.array([5, 5, 6, 7, 8, 9])
    duplicates = np.array([0, 1, 1, 2, 2, 3])
    assert combine_groups(patients, duplicates).tolist() == [0, 0, 0, 1, 1, 2]
    assert combine_groups(patients).tolist() == [0, 0, 1, 2, 3, 4]
    assert connected_groups(4, np.array([3]), np.array([1])).tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match="same length"):
        combine_groups(patients, duplicates[:2])
