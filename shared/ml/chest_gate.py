"""Is this a chest radiograph at all? A gate before any diagnosis.

A classifier cannot say "this is not one of my classes": trained on three kinds of chest film,
it gives a photograph, a document or a micrograph one of those three labels, often with high
confidence. The gate answers a separate question first, from what the service owns: a small
neural network (linear in versions published before it) over low-level features of the image
as the model sees it (layout of a 16x16 thumbnail, intensity histogram, left-right symmetry,
gradient orientations, the power spectrum, the content off a flat border), fitted per version
on its training radiographs and their variations of framing and exposure against generated
images of other kinds
(``worker.evaluation.gate_fitting``). Colour images are refused before it: radiographs are grey.

NumPy and Pillow only: the API imports this module.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared.schemas import ChestXrayCheck

GATE_SIZE = 64
# Mean of max(R, G, B) - min(R, G, B) on 0..255: a grey image saved as RGB scores 0, and JPEG
# chroma noise on a grey radiograph stays around 1.
MAX_COLOURFULNESS = 12.0
_BANDS = ((0.02, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.5))


def _thumbnail(plane: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(np.asarray(plane, dtype=np.float32), mode="F")
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float64)


def standardized(values: np.ndarray) -> np.ndarray:
    return np.asarray((values - values.mean()) / max(float(values.std()), 1e-6))


def gate_features(plane: np.ndarray) -> np.ndarray:
    """Features of one gray image (HxW, in 0..255, as prepared for the model)."""
    plane = _thumbnail(plane, GATE_SIZE)
    layout = standardized(_thumbnail(plane, 16))
    histogram = np.sqrt(np.histogram(plane, bins=16, range=(0, 255))[0] / plane.size)
    flat, mirrored = layout.ravel(), layout[:, ::-1].ravel()
    symmetry = float(np.mean(flat * mirrored))  # the correlation: both are standardized
    unit = standardized(plane)
    dy, dx = np.gradient(unit)
    magnitude = np.hypot(dx, dy)
    bins = ((np.arctan2(dy, dx) % np.pi) / np.pi * 8).astype(np.int64).ravel() % 8
    weights = np.bincount(bins, weights=magnitude.ravel(), minlength=8).astype(np.float64)
    orientation = weights / max(float(weights.sum()), 1e-6)
    power = np.abs(np.fft.rfft2(unit)) ** 2
    radius = np.hypot(np.fft.fftfreq(GATE_SIZE)[:, None], np.fft.rfftfreq(GATE_SIZE)[None])
    spectrum = np.log([power[(radius >= lo) & (radius < hi)].mean() + 1e-9
                       for lo, hi in _BANDS])
    edges = [magnitude.mean(), np.percentile(magnitude, 90), (magnitude < 0.05).mean()]
    # Appended last: a gate fitted before them reads only the features it knows (scores).
    return np.concatenate([flat, histogram, [symmetry], orientation, spectrum, edges,
                           _content(plane, magnitude)])


def _entropy(counts: np.ndarray) -> float:
    share = counts[counts > 0] / max(float(counts.sum()), 1.0)
    return float(-(share * np.log2(share)).sum())


def _content(plane: np.ndarray, magnitude: np.ndarray) -> list[float]:
    """What lies off the image's commonest grey level (a border, a background): how many
    levels it spans and whether its edges are texture or lines. A bordered or annotated film
    keeps a radiograph's many levels and texture; line art, silhouettes and phantoms do not."""
    counts = np.histogram(plane, bins=64, range=(0, 255))[0]
    common = int(np.argmax(counts))
    rest = np.delete(counts, common)
    levels = np.clip((plane / 255 * 64).astype(np.int64), 0, 63) != common
    moving = magnitude[levels & (magnitude >= 0.05)]
    spread = float(moving.std() / moving.mean()) if moving.size > 8 else 0.0
    return [_entropy(counts) / 6, counts[common] / plane.size, _entropy(rest) / 6,
            float(levels.mean()), spread]


@dataclass(frozen=True)
class ChestGate:
    """A version's fitted gate: standardization, an optional hidden ReLU layer, the output
    weights and the accept threshold."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float  # a score below it is not a chest radiograph
    hidden: np.ndarray | None = None  # features x units; None: a linear gate
    hidden_bias: np.ndarray | None = None

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The score (log-odds) of each row of features: higher is more like the
        radiographs."""
        inputs = (features[..., :len(self.mean)] - self.mean) / self.scale
        if self.hidden is not None and self.hidden_bias is not None:
            inputs = np.maximum(inputs @ self.hidden + self.hidden_bias, 0.0)
        return np.asarray(inputs @ self.coef + self.intercept)

    def check(self, plane: np.ndarray, colour: float = 0.0,
              features: np.ndarray | None = None) -> ChestXrayCheck:
        """Whether one prepared gray image (HxW) passes, with its score and the reason;
        ``features``: its ``gate_features``, where the caller has them already."""
        if colour > MAX_COLOURFULNESS:
            return ChestXrayCheck(score=None, threshold=self.threshold, passed=False,
                                  reason=f"a colour picture, not a grey radiograph (colour "
                                  f"strength {colour / 2.55:.0f}%, where a radiograph has 0%)")
        if float(np.ptp(plane)) < 1.0:
            return ChestXrayCheck(score=None, threshold=self.threshold, passed=False,
                                  reason="a blank image: every pixel has the same value")
        if features is None:
            features = gate_features(plane)
        score = float(self.scores(features[None])[0])
        passed = score >= self.threshold
        return ChestXrayCheck(score=score, threshold=self.threshold, passed=passed,
                              reason=None if passed else
                              "unlike the chest radiographs this version was trained on")

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, np.ndarray] = {
            "mean": self.mean, "scale": self.scale, "coef": self.coef,
            "intercept": np.asarray(self.intercept), "threshold": np.asarray(self.threshold)}
        if self.hidden is not None and self.hidden_bias is not None:
            arrays |= {"hidden": self.hidden, "hidden_bias": self.hidden_bias}
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> ChestGate:
        with np.load(path) as data:  # a gate without "hidden" is linear (older versions)
            return cls(mean=data["mean"], scale=data["scale"], coef=data["coef"],
                       intercept=float(data["intercept"]), threshold=float(data["threshold"]),
                       hidden=data["hidden"] if "hidden" in data.files else None,
                       hidden_bias=data["hidden_bias"] if "hidden" in data.files else None)
