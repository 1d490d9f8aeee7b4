"""The published version as every peer serves it: the service's own decode and preparation
(``shared.ml.preprocessing``, with the version's options) and the forward pass of its INT8
copy in the runtime named, so that each peer does the same work per image. No gate, shift
score or calibration: those are the service's own, and cost it time the peers do not spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.config import DEFAULT_MAX_IMAGE_PIXELS
from shared.ml.preprocessing import (
    PreprocessOptions,
    decode_image,
    gray_to_pixels,
    to_model_input,
)
from shared.ml.runtimes import runtime_forward
from shared.registry.files import INT8_FILE, ONNX_FILE
from shared.registry.local import LocalRegistry


@dataclass(frozen=True)
class PeerModel:
    classes: list[str]
    image_size: int
    options: PreprocessOptions
    forward: Any

    def prepare(self, data: bytes) -> np.ndarray:
        """An encoded image as the service prepares it: (size, size, 3) float32 in [0, 255]."""
        floor = self.options.decode_floor(self.image_size)
        gray = decode_image(data, DEFAULT_MAX_IMAGE_PIXELS, floor).gray
        return gray_to_pixels(gray, self.image_size, self.options)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax probabilities (n, classes) of a batch of prepared pixels (n, size, size, 3)."""
        return np.asarray(self.forward(to_model_input(pixels)))


def load_peer_model(models_dir: Path, version: str, runtime: str,
                    threads: int | None = None) -> PeerModel:
    """The version's checksum-verified ONNX file for ``runtime`` (its INT8 copy, or the float
    export for "onnx") behind the forward pass of that runtime."""
    registry = LocalRegistry(models_dir)
    manifest = registry.manifest(version)
    path = registry.verified_file(version, ONNX_FILE if runtime == "onnx" else INT8_FILE)
    if path is None:
        raise SystemExit(f"version {version} has no file for runtime {runtime}")
    return PeerModel(list(manifest.classes), manifest.image_size,
                     PreprocessOptions.from_dict(manifest.preprocessing_options or {}),
                     runtime_forward(runtime, path, with_features=False, threads=threads))
