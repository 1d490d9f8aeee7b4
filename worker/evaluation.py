"""Metrics of a trained model on a held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def summarize(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, per-class recall (sensitivity) and precision, and the confusion matrix."""
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, len(classes))
    support = matrix.sum(axis=1)
    called = matrix.sum(axis=0)
    per_class = {
        label: {
            "support": int(support[i]),
            "recall": float(matrix[i, i] / support[i]) if support[i] else None,
            "precision": float(matrix[i, i] / called[i]) if called[i] else None,
        }
        for i, label in enumerate(classes)
    }
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else None,
        "images": int(len(labels)),
        "confusion_matrix": {"labels": classes, "counts": matrix.tolist()},
        "per_class": per_class,
    }


def evaluate(model: Any, batches: Any, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Run the model over a pipeline of (input, label) batches and summarize."""
    probabilities = model.predict(batches, verbose=0)
    return summarize(labels, np.asarray(probabilities), classes)
