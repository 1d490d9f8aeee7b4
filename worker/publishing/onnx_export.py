"""An ONNX export of each published version, for serving with ONNX Runtime on CPUs.

Keras' own exporter (``model.export(format="onnx")``, tf2onnx underneath) writes the same
graph the API would otherwise run in TensorFlow: the two-headed model (penultimate features
for the shift score, and the softmax). The export is only kept when ONNX Runtime reproduces
Keras' outputs on real training images; otherwise the version is published without it and
served by TensorFlow, with the reason in its manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import JobCancelled, is_out_of_space
from shared.manifest import OnnxExport
from shared.ml.runtimes import OnnxForward
from shared.ml.shift import feature_model
from shared.registry.files import ONNX_FILE
from worker.context import PhaseReporter, Steps

log = logging.getLogger(__name__)

# Largest difference allowed between ONNX Runtime's and Keras' softmax on the same input;
# features are held to the same bound relative to their size.
TOLERANCE = 1e-4


def export(model: Any, folder: Path, inputs: np.ndarray,
           reporter: PhaseReporter | None = None) -> OnnxExport:
    """Write ``folder/model.onnx`` and check it; returns what the manifest records. The
    two steps, converting and checking, are reported as the phase "onnx export"."""
    steps = Steps(reporter, "onnx export", 2)
    net = feature_model(model)
    expected = [np.asarray(t) for t in net(inputs, training=False)]  # also builds the graph
    path = folder / ONNX_FILE
    try:
        net.export(str(path), format="onnx", verbose=False)
        steps.advance()
        got = OnnxForward(path, with_features=True)(inputs)
        gap = _gap(expected, got)
        steps.advance()
    except Exception as exc:  # tf2onnx fails in many ways; the version is still servable
        path.unlink(missing_ok=True)
        # A cancelled job stops here too; a full disk will not hold the rest of it either.
        if isinstance(exc, JobCancelled) or is_out_of_space(exc):
            raise
        log.warning("no ONNX export: %s", exc)
        return OnnxExport(error=f"export failed: {exc}")
    if gap > TOLERANCE:
        path.unlink(missing_ok=True)
        return OnnxExport(error=f"ONNX Runtime differs from Keras by {gap:.2e}")
    return OnnxExport(file=ONNX_FILE, max_difference=gap, checked_images=len(inputs),
                      exporter="keras.Model.export(format='onnx') via tf2onnx")


def _gap(expected: list[np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> float:
    features, probabilities = expected
    feature_gap = np.max(np.abs(got[0] - features) / (1.0 + np.abs(features)))
    return float(max(np.max(np.abs(got[1] - probabilities)), feature_gap))
