"""Distribution shift: how far an image lies from what the model was trained on.

One score cannot see every kind of shift: another hospital's exposure and framing show in the
image itself, a foreign texture in the early VGG blocks, an unfamiliar anatomy or device in
the late ones, and an input the classifier has no evidence for in its logits. Each version
therefore stores several detectors, fitted on its training split: a Mahalanobis distance
(Lee et al., NeurIPS 2018; class-conditional means, a shared Ledoit-Wolf covariance) on the
channel means and standard deviations of VGG blocks (feature statistics), one on the input's
low-level features (``shared.ml.chest_gate.gate_features``), and the energy of the logits (Liu
et al., NeurIPS 2020). Each is standardized by its median and interquartile range on the
validation split; the image's score is the largest of them, and the threshold a quantile of
the validation split's scores. bench/shift_scores.py measures the candidates against
external hospitals' films.

Versions published before this had one Mahalanobis distance on the block means
(``LEGACY_LAYOUT``); they load as a reference of that one detector.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.ml.chest_gate import gate_features
from shared.ml.modeling import BLOCK_POOLS, POOL_LAYER

BLOCKS = BLOCK_POOLS
STATS_LAYOUT = "block-mean-std-v2"
LEGACY_LAYOUT = "block-means-v1"
LEGACY_LAYERS = (*BLOCK_POOLS[:4], POOL_LAYER)
INPUT = "input"


def shift_features(model: Any, layout: str = STATS_LAYOUT) -> Any:
    """The symbolic features a shift reference of ``layout`` reads, from the classifier's
    graph: per block, its channel means then its channel standard deviations."""
    import keras

    if layout == LEGACY_LAYOUT:
        outs = (model.get_layer(name).output for name in LEGACY_LAYERS)
        pooled = [keras.ops.mean(out, axis=(1, 2)) if len(out.shape) == 4 else out
                  for out in outs]
    else:
        pooled = []
        for name in BLOCKS:
            out = model.get_layer(name).output
            pooled += [keras.ops.mean(out, axis=(1, 2)), keras.ops.std(out, axis=(1, 2))]
    return keras.ops.concatenate(pooled, axis=-1)


def block_slices(model: Any) -> dict[str, tuple[int, int]]:
    """Where each block's statistics lie in ``shift_features(model)``, and its means."""
    slices, start = {}, 0
    for name in BLOCKS:
        channels = int(model.get_layer(name).output.shape[-1])
        slices[name] = (start, start + 2 * channels)
        slices[f"{name}:mean"] = (start, start + channels)
        start += 2 * channels
    return slices


def input_features(pixels: np.ndarray) -> np.ndarray:
    """The input detector's features of a batch of (n, size, size, 3) pixels in 0..255."""
    return np.stack([gate_features(p[..., 0]) for p in pixels]) if len(pixels) else \
        np.zeros((0, 0))


def feature_model(model: Any, layout: str = STATS_LAYOUT) -> Any:
    """The classifier with a second output: the features the shift reference is made of."""
    import keras

    return keras.Model(model.input, [shift_features(model, layout), model.output])


@dataclass(frozen=True)
class Detector:
    """One Mahalanobis detector on a slice of the deep features, or on the input's."""

    name: str
    start: int  # slice of the deep features; unused for the input detector
    stop: int
    means: np.ndarray  # (classes, d)
    precision: np.ndarray  # (d, d)
    centre: float = 0.0  # median and interquartile range on the validation split
    spread: float = 1.0

    def raw(self, x: np.ndarray) -> np.ndarray:
        # (x - m)' P (x - m) = x'Px - x'Pm - m'Px + m'Pm: one product with the precision
        # matrix for the batch, not one per class (it was most of the scoring's time).
        xp = x @ self.precision
        squared = (np.sum(xp * x, axis=1)[:, None] - xp @ self.means.T
                   - x @ self._means_precision.T + self._means_norms[None, :])
        return np.asarray(np.sqrt(np.maximum(squared.min(axis=1), 0.0)))

    @functools.cached_property
    def _means_precision(self) -> np.ndarray:
        return np.asarray(self.means @ self.precision)  # (classes, d): m'P

    @functools.cached_property
    def _means_norms(self) -> np.ndarray:
        return np.asarray(np.sum(self._means_precision * self.means, axis=1))  # m'Pm


@dataclass(frozen=True)
class Energy:
    """The negative log-sum-exp of the logits, computed from the pooled last block."""

    start: int
    stop: int
    kernel: np.ndarray
    bias: np.ndarray
    centre: float = 0.0
    spread: float = 1.0

    def raw(self, features: np.ndarray) -> np.ndarray:
        logits = features[:, self.start:self.stop] @ self.kernel + self.bias
        peak = logits.max(axis=1)
        return np.asarray(-(peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))))


@dataclass(frozen=True)
class ShiftReference:
    detectors: tuple[Detector, ...]
    energy: Energy | None
    threshold: float
    quantile: float
    layout: str = STATS_LAYOUT
    # The internal test split's scores, so that an external set's AUROC can be reported.
    test_scores: np.ndarray | None = None

    @property
    def needs_inputs(self) -> bool:
        return any(d.name == INPUT for d in self.detectors)

    def detector_scores(self, features: np.ndarray,
                        inputs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each detector's standardized score: 0 at the validation median, 1 an IQR above."""
        found = {}
        for d in self.detectors:
            if d.name == INPUT:
                if inputs is None:
                    raise ValueError("this shift reference also scores the input images")
                # The input features grew at their end (chest_gate): a reference fitted
                # before reads the ones it knows.
                raw = d.raw(inputs[:, :d.means.shape[1]])
            else:
                raw = d.raw(features[:, d.start:d.stop])
            found[d.name] = (raw - d.centre) / d.spread
        if self.energy is not None:
            found["energy"] = (self.energy.raw(features) - self.energy.centre) / self.energy.spread
        return found

    def scores(self, features: np.ndarray, inputs: np.ndarray | None = None) -> np.ndarray:
        """The largest standardized detector score of each image."""
        return np.asarray(np.max(np.stack(list(self.detector_scores(features, inputs).values())),
                                 axis=0))

    def to_bytes(self) -> bytes:
        arrays: dict[str, Any] = {"layout": np.array(self.layout),
                                  "threshold": np.float64(self.threshold),
                                  "quantile": np.float64(self.quantile),
                                  "names": np.array([d.name for d in self.detectors])}
        for i, d in enumerate(self.detectors):
            arrays[f"d{i}_means"], arrays[f"d{i}_precision"] = d.means, d.precision
            arrays[f"d{i}_meta"] = np.array([d.start, d.stop, d.centre, d.spread])
        if self.energy is not None:
            e = self.energy
            arrays |= {"energy_kernel": e.kernel, "energy_bias": e.bias,
                       "energy_meta": np.array([e.start, e.stop, e.centre, e.spread])}
        if self.test_scores is not None:
            arrays["test_scores"] = self.test_scores
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> ShiftReference:
        with np.load(path) as data:
            threshold, quantile = float(data["threshold"]), float(data["quantile"])
            if "layout" not in data:  # one detector on the block means, unstandardized
                means = data["means"]
                legacy = Detector("features", 0, int(means.shape[1]), means, data["precision"])
                return cls((legacy,), None, threshold, quantile, LEGACY_LAYOUT)
            detectors = []
            for i, name in enumerate(data["names"]):
                start, stop, centre, spread = data[f"d{i}_meta"]
                detectors.append(Detector(str(name), int(start), int(stop), data[f"d{i}_means"],
                                          data[f"d{i}_precision"], float(centre), float(spread)))
            energy = None
            if "energy_kernel" in data:
                start, stop, centre, spread = data["energy_meta"]
                energy = Energy(int(start), int(stop), data["energy_kernel"], data["energy_bias"],
                                float(centre), float(spread))
            test = data["test_scores"] if "test_scores" in data else None
            return cls(tuple(detectors), energy, threshold, quantile, str(data["layout"]), test)
