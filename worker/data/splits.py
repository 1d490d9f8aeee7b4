"""Train/validation/test splits that keep every group (patient, duplicate film) in one split.

A random split of images leaks when the same patient or the same film re-encoded appears in
both train and test: the model is then scored on what it has seen. Here whole groups are
assigned, stratified by each group's majority class, and groupings from several sources
(patient ids from a CSV, near-duplicate hashes) are merged into connected components first.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

SPLITS = ("train", "validation", "test")


def _first_appearance_ids(labels: np.ndarray) -> np.ndarray:
    # Renumber 0, 1, 2 ... in order of first appearance, so ids do not depend on the solver.
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def connected_groups(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Group ids of ``n`` items where each pair (first[k], second[k]) is linked, transitively."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(n, n))
    _, components = connected_components(graph, directed=False)
    return _first_appearance_ids(components)


def combine_groups(*groupings: Sequence[int] | np.ndarray) -> np.ndarray:
    """Merge groupings of the same items: two items share a group if any grouping joins them."""
    arrays = [np.asarray(g).ravel() for g in groupings]
    if not arrays or any(len(a) != len(arrays[0]) for a in arrays):
        raise ValueError("combine_groups needs one or more groupings of the same length")
    n = len(arrays[0])
    firsts, seconds = [], []
    for array in arrays:
        # Linking every item to its group's first member is enough for connectivity.
        _, first_index, inverse = np.unique(array, return_index=True, return_inverse=True)
        firsts.append(np.arange(n))
        seconds.append(first_index[inverse.ravel()])
    return connected_groups(n, np.concatenate(firsts), np.concatenate(seconds))


def _read_keys(csv_path: Path, key_column: str, file_column: str) -> dict[str, str]:
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {key_column, file_column} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path.name} has no column(s) {sorted(missing)}")
        keys: dict[str, str] = {}
        for row in reader:
            file, key = (row[file_column] or "").strip(), (row[key_column] or "").strip()
            if not file or not key:
                continue
            file = PurePosixPath(file.replace("\\", "/")).as_posix()
            if keys.setdefault(file, key) != key:
                raise ValueError(f"{csv_path.name}: {file!r} has two {key_column} values")
    return keys


def _lookup(keys: dict[str, str], path: Path) -> str | None:
    # The CSV may name a file by its name or by a path relative to some root: try the
    # path's shortest suffix first.
    for depth in range(1, len(path.parts) + 1):
        key = keys.get(PurePosixPath(*path.parts[-depth:]).as_posix())
        if key is not None:
            return key
    return None


def groups_from_csv(csv_path: Path, paths: list[Path], key_column: str,
                    file_column: str = "file") -> np.ndarray:
    """Group ids from a CSV column (e.g. patient id); files it does not list stay alone."""
    keys = _read_keys(csv_path, key_column, file_column)
    tokens = []
    for index, path in enumerate(paths):
        key = _lookup(keys, path)
        tokens.append(f"key:{key}" if key is not None else f"alone:{index}")
    return _first_appearance_ids(np.array(tokens))


def _check_inputs(labels: np.ndarray, groups: np.ndarray, validation: float,
                  test: float) -> None:
    if len(labels) != len(groups) or len(labels) == 0:
        raise ValueError("labels and groups must be non-empty and of the same length")
    if not (validation > 0 and test > 0 and validation + test < 1):
        raise ValueError(f"need 0 < validation, 0 < test and validation + test < 1; "
                         f"got validation={validation}, test={test}")


def _group_table(classes: np.ndarray, group_ids: np.ndarray,
                 n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group: image count of each class, and the majority class (ties: lowest)."""
    counts = np.zeros((group_ids.max() + 1, n_classes), dtype=np.int64)
    np.add.at(counts, (group_ids, classes), 1)
    return counts, counts.argmax(axis=1)


def _assign_groups(counts: np.ndarray, majority: np.ndarray, targets: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """The split index of every group, filling the per-class (split, class) targets."""
    assigned = np.zeros_like(targets)
    split_of_group = np.empty(len(counts), dtype=np.int64)
    for cls in range(targets.shape[1]):
        members = rng.permutation(np.flatnonzero(majority == cls))
        members = members[np.argsort(-counts[members].sum(axis=1), kind="stable")]
        for group in members:
            deficit = (targets[:, cls] - assigned[:, cls]) / targets[:, cls]
            split = int(np.argmax(deficit))
            split_of_group[group] = split
            assigned[split] += counts[group]
    return split_of_group


def grouped_stratified_split(labels: np.ndarray, groups: np.ndarray, validation: float,
                             test: float, seed: int) -> dict[str, np.ndarray]:
    """Sorted image indices of train/validation/test; no group spans two splits.

    Per majority class, the groups are shuffled with ``seed``, ordered largest first (a big
    group placed late would overshoot a small split) and each given to the split furthest
    below its per-class target, as a fraction of that target. An empty split is always
    furthest below, so a class that is the majority of 3 or more groups reaches all three.
    """
    labels, groups = np.asarray(labels).ravel(), np.asarray(groups).ravel()
    _check_inputs(labels, groups, validation, test)
    class_values, classes = np.unique(labels, return_inverse=True)
    group_ids = _first_appearance_ids(groups)
    counts, majority = _group_table(classes.ravel(), group_ids, len(class_values))
    per_class_groups = np.bincount(majority, minlength=len(class_values))
    for value, n_groups in zip(class_values.tolist(), per_class_groups.tolist(), strict=True):
        if n_groups < len(SPLITS):
            raise ValueError(f"class {value!r} is the majority class of only {n_groups} "
                             f"group(s); {len(SPLITS)} are needed to put it in every split")
    fractions = np.array([1 - validation - test, validation, test])
    targets = fractions[:, None] * counts.sum(axis=0)[None, :]
    split_of_group = _assign_groups(counts, majority, targets, np.random.default_rng(seed))
    image_split = split_of_group[group_ids]
    return {name: np.flatnonzero(image_split == s) for s, name in enumerate(SPLITS)}
