"""Evaluating a published version on any labelled folder, e.g. another hospital's images."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shared.datasets import Dataset
from shared.errors import InvalidDataset
from shared.inference import LoadedModel, load_version
from shared.preprocessing import decode_grayscale
from shared.registry import Registry
from worker.evaluation import summarize

BATCH = 32


def _key(label: str) -> str:
    """Names match across spelling conventions: 'VIRAL_PNEUMONIA' is 'Viral Pneumonia'."""
    return re.sub(r"[\s_-]+", " ", label).strip().casefold()


def match_classes(dataset_classes: list[str], model_classes: list[str]) -> dict[str, int]:
    """Each dataset class's index among the model's classes; an unknown class is an error."""
    index = {_key(label): i for i, label in enumerate(model_classes)}
    unknown = [label for label in dataset_classes if _key(label) not in index]
    if unknown:
        raise InvalidDataset(f"classes {unknown} are not among the model's {model_classes}")
    return {label: index[_key(label)] for label in dataset_classes}


def evaluate_external(registry: Registry, version: str, dataset: Dataset, dataset_name: str,
                      max_pixels: int) -> dict[str, Any]:
    """The version's calibrated predictions on every image of ``dataset``, summarized."""
    model = load_version(registry, version)
    mapping = match_classes(dataset.classes, model.classes)
    paths = [(path, mapping[label]) for label, files in dataset.files.items() for path in files]
    probabilities, scores = [], []
    for start in range(0, len(paths), BATCH):
        chunk = [model.pixels(decode_grayscale(p.read_bytes(), max_pixels))
                 for p, _ in paths[start:start + BATCH]]
        result = model.infer(np.stack(chunk))
        probabilities.append(result.probabilities)
        if result.shift_scores is not None:
            scores.append(result.shift_scores)
    labels = np.array([y for _, y in paths], dtype=np.int64)
    all_probabilities = np.concatenate(probabilities)
    return {
        "kind": "external",
        "version": version,
        "evaluated_at": datetime.now(UTC).isoformat(),
        "dataset": {"name": dataset_name, "fingerprint": dataset.fingerprint(),
                    "layout": dataset.layout,
                    "counts": {label: len(files) for label, files in dataset.files.items()},
                    "class_mapping": {label: model.classes[i] for label, i in mapping.items()}},
        "metrics": summarize(labels, all_probabilities, model.classes),
        "distribution_shift": _shift_breakdown(model, labels, all_probabilities, scores),
    }


def _shift_breakdown(model: LoadedModel, labels: np.ndarray, probabilities: np.ndarray,
                     scores: list[np.ndarray]) -> dict[str, Any] | None:
    """How many images the shift score flags, and the metrics on each side apart."""
    if model.shift is None or not scores:
        return None
    flagged = np.concatenate(scores) > model.shift.threshold
    parts = {name: summarize(labels[mask], probabilities[mask], model.classes)
             for name, mask in (("flagged", flagged), ("unflagged", ~flagged)) if mask.any()}
    return {"threshold": model.shift.threshold, "flagged": int(flagged.sum()),
            "images": int(len(flagged)), "metrics": parts}
