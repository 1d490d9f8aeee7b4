"""Fitting a version's distribution-shift reference on its training and validation splits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf

from shared.ml.modeling import BLOCK_POOLS
from shared.ml.shift import INPUT, Detector, Energy, ShiftReference
from worker.context import Steps

# Which detectors a version fits: feature statistics of the middle blocks, the input's
# low-level features and the logits' energy: together they separated each external set from
# the test split better than the old score (bench/shift_scores.py), and the 0.96 quantile of
# validation flags about 4% of the test split.
DETECTORS = (BLOCK_POOLS[2], BLOCK_POOLS[3], INPUT)
WITH_ENERGY = True
QUANTILE = 0.96


def features_and_probabilities(extractor: Any, batches: Any, steps: Steps | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:
    """One pass of ``shared.ml.shift.feature_model(model)`` over (input, label) batches: the
    shift features and the (uncalibrated) class probabilities of every image, each batch's
    images counted as ``steps`` done."""
    features, probabilities = [], []
    for x, _ in batches:
        f, p = extractor(x, training=False)
        features.append(np.asarray(f))
        probabilities.append(np.asarray(p))
        if steps is not None:
            steps.advance(len(probabilities[-1]))
    return np.concatenate(features), np.concatenate(probabilities)


def _robust(values: np.ndarray) -> tuple[float, float]:
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return float(median), max(float(q3 - q1), 1e-9)


def _detector(name: str, start: int, stop: int, train: np.ndarray,
              labels: np.ndarray | None) -> Detector:
    """Class means (one mean without labels) and a Ledoit-Wolf shared covariance."""
    labels = np.zeros(len(train), dtype=np.int64) if labels is None else labels
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    centred = train - means[np.searchsorted(classes, labels)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    return Detector(name, start, stop, means, precision)


def fit_reference(train_features: np.ndarray, train_labels: np.ndarray,
                  val_features: np.ndarray, quantile: float = QUANTILE,
                  slices: dict[str, tuple[int, int]] | None = None,
                  detectors: Sequence[str] = DETECTORS,
                  inputs: tuple[np.ndarray, np.ndarray] | None = None,
                  dense: tuple[np.ndarray, np.ndarray] | None = None) -> ShiftReference:
    """The version's detectors, each standardized on validation; the threshold is the
    validation quantile of their maximum. Without ``slices`` one detector reads every
    feature; ``inputs`` are (train, validation) input features for the input detector,
    ``dense`` the softmax layer's kernel and bias for the energy."""
    chosen: list[Detector] = []
    if slices is None:
        chosen.append(_detector("features", 0, train_features.shape[1], train_features,
                                train_labels))
    else:
        for name in detectors:
            if name == INPUT:
                if inputs is not None:
                    chosen.append(_detector(INPUT, 0, 0, inputs[0], None))
                continue
            start, stop = slices[name]
            chosen.append(_detector(name, start, stop, train_features[:, start:stop],
                                    train_labels))
    standardized = []
    for d in chosen:
        held_out = inputs[1] if d.name == INPUT and inputs is not None else \
            val_features[:, d.start:d.stop]
        centre, spread = _robust(d.raw(held_out))
        standardized.append(Detector(d.name, d.start, d.stop, d.means, d.precision,
                                     centre, spread))
    energy = None
    if dense is not None and slices is not None and WITH_ENERGY:
        start, stop = slices["block5_pool:mean"]  # = avg_pool, the softmax layer's input
        plain = Energy(start, stop, dense[0].astype(np.float64), dense[1].astype(np.float64))
        energy = Energy(start, stop, plain.kernel, plain.bias, *_robust(plain.raw(val_features)))
    reference = ShiftReference(tuple(standardized), energy, np.inf, quantile)
    val_inputs = inputs[1] if inputs is not None else None
    threshold = float(np.quantile(reference.scores(val_features, val_inputs), quantile))
    return ShiftReference(tuple(standardized), energy, threshold, quantile)
