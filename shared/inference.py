"""A published version loaded for inference: checksum-verified, warmed up, thread-safe."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.calibration import apply_temperature
from shared.errors import ModelLoadFailed
from shared.modeling import load_model
from shared.preprocessing import to_model_input
from shared.registry import Registry


@dataclass
class LoadedModel:
    version: str
    classes: list[str]
    image_size: int
    model: Any
    # Fitted on the validation split at training time; 1.0 leaves the softmax as it is.
    temperature: float = 1.0
    # One inference at a time per model: two concurrent VGG16 passes only fight for cores.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of (n, size, size, 3) pixels in [0, 255]."""
        batch = to_model_input(pixels)
        with self.lock:
            raw = np.asarray(self.model(batch, training=False))
        return apply_temperature(raw, self.temperature) if self.temperature != 1.0 else raw

    def predict_one(self, pixels: np.ndarray) -> dict[str, float]:
        probs = self.probabilities(pixels[None])[0]
        return {label: float(p) for label, p in zip(self.classes, probs, strict=True)}


def load_version(registry: Registry, version: str) -> LoadedModel:
    """Load a version after verifying its checksum, and warm it up with one prediction."""
    try:
        manifest = registry.manifest(version)
        path = registry.verified_model_path(version)
        loaded = LoadedModel(version=version, classes=list(manifest["classes"]),
                             image_size=int(manifest["image_size"]), model=load_model(path),
                             temperature=float(manifest.get("calibration", {})
                                               .get("temperature", 1.0)))
        n_out = loaded.probabilities(
            np.zeros((1, loaded.image_size, loaded.image_size, 3), np.float32)).shape[-1]
    except ModelLoadFailed:
        raise
    except Exception as exc:  # a bad artifact can fail in many ways; all mean "not served"
        raise ModelLoadFailed(f"version {version} could not be loaded: {exc}") from exc
    if n_out != len(loaded.classes):
        raise ModelLoadFailed(f"version {version} outputs {n_out} classes, manifest lists "
                              f"{len(loaded.classes)}")
    return loaded
