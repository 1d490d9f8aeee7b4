"""Distribution shift: how far an image's features lie from what the model was trained on.

Each version stores a compact reference of its training distribution: per-class means and a
shared (shrunk) precision matrix of the penultimate-layer features (``avg_pool``, the input of
the softmax layer), fitted on the training split. The score of an image is its Mahalanobis
distance to the nearest class mean; the threshold is a quantile of the validation split's
scores (0.99 by default), so about 1% of in-distribution images are flagged.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHIFT_FILE = "shift.npz"
FEATURE_LAYER = "avg_pool"


@dataclass(frozen=True)
class ShiftReference:
    means: np.ndarray  # (classes, features)
    precision: np.ndarray  # (features, features)
    threshold: float
    quantile: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to its nearest class mean."""
        diff = features[:, None, :] - self.means[None, :, :]
        squared = np.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, means=self.means, precision=self.precision,
                 threshold=np.float64(self.threshold), quantile=np.float64(self.quantile))
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> ShiftReference:
        with np.load(path) as data:
            return cls(means=data["means"], precision=data["precision"],
                       threshold=float(data["threshold"]), quantile=float(data["quantile"]))
