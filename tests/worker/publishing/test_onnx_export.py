"""The ONNX export: a job cancelled while it runs stops there, leaving no file behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.errors import JobCancelled
from shared.ml.modeling import ModelConfig, build_model
from shared.registry.files import ONNX_FILE
from tests.helpers.reporters import CancelAfter
from worker.publishing.onnx_export import export


def test_a_cancel_during_the_export_stops_the_job_and_leaves_no_file(tmp_path: Path) -> None:
    model = build_model(ModelConfig(num_classes=3, image_size=32))
    inputs = np.zeros((2, 32, 32, 3), np.float32)
    with pytest.raises(JobCancelled, match="onnx export"):
        export(model, tmp_path, inputs, CancelAfter(1))  # converted, then cancelled
    assert not (tmp_path / ONNX_FILE).exists()
