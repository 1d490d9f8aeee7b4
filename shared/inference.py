"""A published version loaded for inference: checksum-verified, warmed up, thread-safe.

One forward pass gives the class probabilities (temperature-calibrated) and, when the version
has a shift reference, the penultimate features that score how far the image lies from the
training distribution.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.calibration import apply_temperature
from shared.errors import ModelLoadFailed
from shared.modeling import load_model
from shared.preprocessing import (
    PreprocessOptions,
    prepare_gray,
    preprocessing_id,
    resize_to_rgb,
    to_model_input,
)
from shared.registry import Registry
from shared.schemas import DistributionShift, Prediction
from shared.shift import SHIFT_FILE, ShiftReference, feature_model


@dataclass
class Inference:
    """Calibrated probabilities of a batch and, where the version has one, shift scores."""

    probabilities: np.ndarray
    shift_scores: np.ndarray | None


@dataclass
class LoadedModel:
    version: str
    classes: list[str]
    image_size: int
    model: Any
    # Fitted on the validation split at training time; 1.0 leaves the softmax as it is.
    temperature: float = 1.0
    options: PreprocessOptions = field(default_factory=PreprocessOptions)
    shift: ShiftReference | None = None
    # One inference at a time per model: two concurrent VGG16 passes only fight for cores.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _two_headed: Any = field(default=None, repr=False)

    def pixels(self, gray: np.ndarray) -> np.ndarray:
        """A decoded gray image prepared exactly as this version was trained."""
        return resize_to_rgb(prepare_gray(gray, self.options), self.image_size)

    def infer(self, pixels: np.ndarray) -> Inference:
        """One pass over a batch of (n, size, size, 3) pixels in [0, 255]."""
        batch = to_model_input(pixels)
        with self.lock:
            if self.shift is None:
                raw, features = np.asarray(self.model(batch, training=False)), None
            else:
                features, raw = (np.asarray(t) for t in self._features_and_output(batch))
        probabilities = (apply_temperature(raw, self.temperature)
                         if self.temperature != 1.0 else raw)
        scores = None if self.shift is None or features is None else self.shift.scores(features)
        return Inference(probabilities, scores)

    def _features_and_output(self, batch: np.ndarray) -> Any:
        if self._two_headed is None:
            self._two_headed = feature_model(self.model)
        return self._two_headed(batch, training=False)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.infer(pixels).probabilities

    def predict(self, gray: np.ndarray) -> Prediction:
        """The answer for one decoded image: label, calibrated probabilities, shift."""
        result = self.infer(self.pixels(gray)[None])
        probabilities = {label: float(p) for label, p in
                         zip(self.classes, result.probabilities[0], strict=True)}
        shift = None
        if self.shift is not None and result.shift_scores is not None:
            score = float(result.shift_scores[0])
            shift = DistributionShift(score=score, threshold=self.shift.threshold,
                                      flagged=score > self.shift.threshold)
        return Prediction(label=max(probabilities, key=probabilities.__getitem__),
                          probabilities=probabilities, model_version=self.version,
                          distribution_shift=shift)


def _from_manifest(registry: Registry, version: str) -> LoadedModel:
    manifest = registry.manifest(version)
    options = PreprocessOptions.from_dict(manifest.get("preprocessing_options", {}))
    if manifest.get("preprocessing", preprocessing_id(options)) != preprocessing_id(options):
        raise ModelLoadFailed(f"version {version} was trained with preprocessing "
                              f"{manifest['preprocessing']!r}, which this service lacks")
    shift_file = registry.version_dir(version) / SHIFT_FILE
    return LoadedModel(
        version=version, classes=list(manifest["classes"]),
        image_size=int(manifest["image_size"]),
        model=load_model(registry.verified_model_path(version)),
        temperature=float((manifest.get("calibration") or {}).get("temperature", 1.0)),
        options=options,
        shift=ShiftReference.load(shift_file) if shift_file.is_file() else None,
    )


def load_version(registry: Registry, version: str) -> LoadedModel:
    """Load a version after verifying its checksum, and warm it up with one prediction."""
    try:
        loaded = _from_manifest(registry, version)
        size = loaded.image_size
        n_out = loaded.infer(np.zeros((1, size, size, 3), np.float32)).probabilities.shape[-1]
    except ModelLoadFailed:
        raise
    except Exception as exc:  # a bad artifact can fail in many ways; all mean "not served"
        raise ModelLoadFailed(f"version {version} could not be loaded: {exc}") from exc
    if n_out != len(loaded.classes):
        raise ModelLoadFailed(f"version {version} outputs {n_out} classes, manifest lists "
                              f"{len(loaded.classes)}")
    return loaded
