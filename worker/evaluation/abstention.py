"""Fitting and measuring a version's abstention: the confidence threshold, whether it beats
chance, and how the answers it keeps do (risk-coverage)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from shared.ml.reliability import (
    ReliabilityRecord,
    ReliableClass,
    ReliableSubset,
    RiskCoveragePoint,
    above_chance,
    reasons,
)
from shared.paired import BOOTSTRAP_RESAMPLES, balanced_accuracies

COVERAGE_POINTS = tuple(round(0.1 * k, 1) for k in range(1, 11))


def confidence_threshold(probabilities: np.ndarray, coverage: float) -> float | None:
    """The top probability that keeps ``coverage`` of these answers (validation split)."""
    if len(probabilities) == 0:
        return None
    return float(np.quantile(probabilities.max(axis=1), 1.0 - coverage))


def _balanced(labels: np.ndarray, predicted: np.ndarray) -> float | None:
    if len(labels) == 0:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class absent from a resample or a subset
        return float(balanced_accuracy_score(labels, predicted))


def balanced_accuracy_interval(labels: np.ndarray, predicted: np.ndarray,
                               seed: int = 0) -> list[float] | None:
    """95% percentile bootstrap interval of the balanced accuracy; None without images."""
    if len(labels) == 0:
        return None
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.integers(0, len(labels), len(labels))
                      for _ in range(BOOTSTRAP_RESAMPLES)])
    low, high = np.quantile(balanced_accuracies(labels[picks], predicted[picks]), [0.025, 0.975])
    return [float(low), float(high)]


def risk_coverage(labels: np.ndarray, probabilities: np.ndarray) -> list[RiskCoveragePoint]:
    """Accuracy of the most confident answers kept, at each tenth of coverage."""
    order = np.argsort(-probabilities.max(axis=1), kind="stable")
    predicted = probabilities.argmax(axis=1)
    points = []
    for coverage in COVERAGE_POINTS:
        kept = order[:max(1, int(round(coverage * len(order))))] if len(order) else order
        if len(kept) == 0:
            break
        points.append(RiskCoveragePoint(
            coverage=coverage, accuracy=float(np.mean(predicted[kept] == labels[kept])),
            balanced_accuracy=_balanced(labels[kept], predicted[kept])))
    return points


def _recall(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if len(hits) else None


def per_class(labels: np.ndarray, predicted: np.ndarray, keep: np.ndarray,
              classes: list[str]) -> dict[str, ReliableClass]:
    """Each true class with images: recall over all its answers and over the reliable ones."""
    found = {}
    for index, name in enumerate(classes):
        mine = labels == index
        if not mine.any():
            continue
        hits = predicted[mine] == index
        found[name] = ReliableClass(
            images=int(mine.sum()), reliable=int(keep[mine].sum()), recall=_recall(hits),
            reliable_recall=_recall(hits[keep[mine]]))
    return found


def reliable_subset(labels: np.ndarray, probabilities: np.ndarray,
                    shifted: np.ndarray | None, record: ReliabilityRecord,
                    classes: list[str]) -> ReliableSubset:
    """Apply the answer rule (``shared.ml.reliability.reasons``) to every image of a set;
    ``classes`` names the columns of ``probabilities``."""
    flags = shifted if shifted is not None else np.zeros(len(labels), dtype=bool)
    keep = np.array([not reasons(float(p.max()), bool(f), record)
                     for p, f in zip(probabilities, flags, strict=True)], dtype=bool)
    predicted = probabilities.argmax(axis=1)
    return ReliableSubset(
        images=len(labels), coverage=float(keep.mean()) if len(keep) else 0.0,
        accuracy=float(np.mean(predicted[keep] == labels[keep])) if keep.any() else None,
        balanced_accuracy=_balanced(labels[keep], predicted[keep]),
        accuracy_all=float(np.mean(predicted == labels)) if len(labels) else None,
        balanced_accuracy_all=_balanced(labels, predicted),
        flagged_shift=float(flags.mean()) if len(flags) else None,
        risk_coverage=risk_coverage(labels, probabilities),
        per_class=per_class(labels, predicted, keep, classes))


def fit_reliability(val_probabilities: np.ndarray, test_labels: np.ndarray,
                    test_probabilities: np.ndarray, test_shifted: np.ndarray | None,
                    classes: list[str], coverage: float, seed: int) -> ReliabilityRecord:
    """The version's record: threshold from validation, chance check and subset on test."""
    predicted = test_probabilities.argmax(axis=1)
    interval = balanced_accuracy_interval(test_labels, predicted, seed)
    chance = 1.0 / len(classes)
    record = ReliabilityRecord(
        confidence_threshold=confidence_threshold(val_probabilities, coverage),
        confidence_coverage=coverage, chance=chance, balanced_accuracy_ci=interval,
        better_than_chance=above_chance(interval, chance))
    return record.model_copy(update={"test": reliable_subset(
        test_labels, test_probabilities, test_shifted, record, classes)})
