"""Fitting a version's distribution-shift reference on its training and validation splits."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf

from shared.shift import ShiftReference


def features_and_probabilities(extractor: Any, batches: Any) -> tuple[np.ndarray, np.ndarray]:
    """One pass of ``shared.shift.feature_model(model)`` over (input, label) batches: the
    shift features and the (uncalibrated) class probabilities of every image."""
    features, probabilities = [], []
    for x, _ in batches:
        f, p = extractor(x, training=False)
        features.append(np.asarray(f))
        probabilities.append(np.asarray(p))
    return np.concatenate(features), np.concatenate(probabilities)


def fit_reference(train_features: np.ndarray, train_labels: np.ndarray,
                  val_features: np.ndarray, quantile: float = 0.99) -> ShiftReference:
    """Class means and a Ledoit-Wolf shared covariance; threshold from validation scores."""
    classes = np.unique(train_labels)
    means = np.stack([train_features[train_labels == c].mean(axis=0) for c in classes])
    centred = train_features - means[np.searchsorted(classes, train_labels)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    reference = ShiftReference(means=means, precision=precision, threshold=np.inf,
                               quantile=quantile)
    threshold = float(np.quantile(reference.scores(val_features), quantile))
    return ShiftReference(means=means, precision=precision, threshold=threshold,
                          quantile=quantile)
