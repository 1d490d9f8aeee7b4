"""Distribution shift: how far an image's features lie from what the model was trained on.

Each version stores a compact reference of its training distribution: per-class means and a
shared (shrunk) precision matrix of its features, fitted on the training split. The features
are the penultimate layer (``avg_pool``, the input of the softmax layer) joined with the
spatial means of ``block3_pool`` and ``block4_pool``: the last layer alone barely separates
images whose texture is foreign but averages out (noise), while the middle blocks see it
(multi-layer Mahalanobis, as in Lee et al., NeurIPS 2018). The score of an image is its Mahalanobis
distance to the nearest class mean; the threshold is a quantile of the validation split's
scores (0.99 by default), so about 1% of in-distribution images are flagged.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SHIFT_FILE = "shift.npz"
FEATURE_LAYERS = ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "avg_pool")
FEATURE_LAYER = "+".join(FEATURE_LAYERS)


def shift_features(model: Any) -> Any:
    """The symbolic features the shift reference is made of, from the classifier's graph."""
    import keras

    pooled = [keras.ops.mean(out, axis=(1, 2)) if len(out.shape) == 4 else out
              for out in (model.get_layer(name).output for name in FEATURE_LAYERS)]
    return keras.ops.concatenate(pooled, axis=-1)


def feature_model(model: Any) -> Any:
    """The classifier with a second output: the features the shift reference is made of."""
    import keras

    return keras.Model(model.input, [shift_features(model), model.output])


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
