"""Two versions judged on the same images: a paired bootstrap interval of the difference in
balanced accuracy, and McNemar's exact test. Paired, because the same films scored twice
share their difficulty: an interval of each version's own score overlaps far more than the
interval of their difference."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from shared.manifest import PairedComparison

BOOTSTRAP_RESAMPLES = 1000


def balanced_accuracies(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The balanced accuracy of each row of (resamples, n) labels and predictions at once:
    the mean recall over the classes present in that row's labels, as scikit-learn's
    ``balanced_accuracy_score`` defines it (a thousand of its calls took seconds)."""
    rows, classes = labels.shape[0], int(max(labels.max(), predicted.max())) + 1
    index = (np.arange(rows)[:, None] * classes + labels).ravel()
    total = np.bincount(index, minlength=rows * classes).reshape(rows, classes)
    hits = np.bincount(index, weights=(predicted == labels).ravel(),
                       minlength=rows * classes).reshape(rows, classes)
    present = total > 0
    recall = np.where(present, hits / np.maximum(total, 1), 0.0)
    return np.asarray(recall.sum(axis=1) / present.sum(axis=1))


def paired_comparison(labels: np.ndarray, first: np.ndarray, second: np.ndarray,
                      names: tuple[str, str], seed: int = 0,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> PairedComparison:
    """``first`` against ``second``, the predicted class indices of two versions on the same
    labelled images: the difference of balanced accuracy (first minus second) and its 95%
    percentile interval over resamples of the images, each resample scoring both."""
    labels, first, second = (np.asarray(a, dtype=np.int64) for a in (labels, first, second))
    if not len(labels):
        return PairedComparison(images=0, first=names[0], second=names[1])
    right_first, right_second = first == labels, second == labels
    only_first = int(np.sum(right_first & ~right_second))
    only_second = int(np.sum(~right_first & right_second))
    scores = balanced_accuracies(np.stack([labels, labels]), np.stack([first, second]))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(labels), (resamples, len(labels)))
    differences = (balanced_accuracies(labels[picks], first[picks])
                   - balanced_accuracies(labels[picks], second[picks]))
    low, high = np.quantile(differences, [0.025, 0.975])
    discordant = only_first + only_second
    return PairedComparison(
        images=len(labels), first=names[0], second=names[1],
        first_balanced_accuracy=float(scores[0]), second_balanced_accuracy=float(scores[1]),
        difference=float(scores[0] - scores[1]), difference_ci=[float(low), float(high)],
        only_first_right=only_first, only_second_right=only_second,
        mcnemar_p=float(binomtest(only_first, discordant, 0.5).pvalue) if discordant else None)
