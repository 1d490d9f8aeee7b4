"""The supervised source detector (Cao et al. 2020) that bench/source_detector.py measures
beside a version's shift reference. Measured, not shipped: on sources left out of its fit it
marked no more wrong answers unreliable than the reference alone, so the service's reference
(``worker.evaluation.shift_fitting.fit_reference``) is fitted without it.

A balanced logistic regression on a slice of the deep features tells the version's training
split (0) from other sources' images (1). Its logit is standardized as the reference's own
detectors are (median and interquartile range on validation), or by the "tail" spread, and
joins them: an image's score is the larger of the reference's score and the source score, and
the threshold the validation quantile of that maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from shared.ml.shift import ShiftReference


@dataclass(frozen=True)
class SourceDetector:
    """The logit of "from another source" of a linear classifier on ``start:stop`` of the deep
    features, each feature standardized first."""

    start: int
    stop: int
    mean: np.ndarray  # (d,) per-feature standardization
    scale: np.ndarray
    weights: np.ndarray  # (d,)
    bias: float
    centre: float = 0.0  # of the raw logit on the validation split
    spread: float = 1.0

    def raw(self, features: np.ndarray) -> np.ndarray:
        x = (features[:, self.start:self.stop] - self.mean) / self.scale
        return np.asarray(x @ self.weights + self.bias)

    def scores(self, features: np.ndarray) -> np.ndarray:
        return (self.raw(features) - self.centre) / self.spread


@dataclass(frozen=True)
class WithSource:
    """A version's unchanged shift reference and a source detector, judged as one: what
    ``ShiftReference`` offers the bench (``scores``, ``threshold``, ``quantile``)."""

    reference: ShiftReference
    source: SourceDetector
    threshold: float

    @property
    def quantile(self) -> float:
        return self.reference.quantile

    def scores(self, features: np.ndarray, inputs: np.ndarray | None = None) -> np.ndarray:
        return np.maximum(self.reference.scores(features, inputs), self.source.scores(features))


def source_span(slices: dict[str, tuple[int, int]], blocks: Sequence[str]) -> tuple[int, int]:
    """Where the statistics of ``blocks`` (consecutive, first to last) lie in the features."""
    return slices[blocks[0]][0], slices[blocks[-1]][1]


def fit_source(train: np.ndarray, others: np.ndarray, span: tuple[int, int],
               c: float) -> SourceDetector:
    """The training split's features against other sources' on ``span``, under L2
    regularization ``c`` (scikit-learn's C); not yet standardized on validation."""
    from sklearn.linear_model import LogisticRegression

    start, stop = span
    x = np.concatenate([train[:, start:stop], others[:, start:stop]]).astype(np.float64)
    y = np.r_[np.zeros(len(train)), np.ones(len(others))]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)  # a channel that never fires stays at 0
    classifier = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    classifier.fit((x - mean) / scale, y)
    return SourceDetector(start, stop, mean, scale, classifier.coef_[0].copy(),
                          float(classifier.intercept_[0]))


def _thresholded(reference: ShiftReference, source: SourceDetector, val_features: np.ndarray,
                 val_inputs: np.ndarray | None) -> WithSource:
    joined = WithSource(reference, source, np.inf)
    threshold = float(np.quantile(joined.scores(val_features, val_inputs), reference.quantile))
    return replace(joined, threshold=threshold)


def with_source(reference: ShiftReference, train: np.ndarray, others: np.ndarray,
                val_features: np.ndarray, val_inputs: np.ndarray | None,
                span: tuple[int, int], c: float) -> WithSource:
    """``reference`` (fitted on ``train``) and a source detector against ``others``,
    standardized by its validation median and IQR as the reference's detectors are."""
    source = fit_source(train, others, span, c)
    q1, median, q3 = np.quantile(source.raw(val_features), [0.25, 0.5, 0.75])
    source = replace(source, centre=float(median), spread=max(float(q3 - q1), 1e-9))
    return _thresholded(reference, source, val_features, val_inputs)


def tail(joined: WithSource, val_features: np.ndarray, val_inputs: np.ndarray | None
         ) -> WithSource:
    """The source detector re-spread so that its validation quantile lies at the threshold of
    the reference's detectors alone (so it alone would flag as many validation images as
    they do); the threshold refitted."""
    raw = joined.source.raw(val_features)
    centre = float(np.median(raw))
    spread = (float(np.quantile(raw, joined.quantile)) - centre) / joined.reference.threshold
    source = replace(joined.source, centre=centre, spread=spread)
    return _thresholded(joined.reference, source, val_features, val_inputs)
