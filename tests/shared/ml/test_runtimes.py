"""The forward passes of an ONNX file: OpenVINO on the INT8 copy answers as ONNX Runtime does at
every batch size; the candidates follow the settings and OpenVINO's check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.config import Precision, Settings
from shared.ml.preprocessing import to_model_input
from shared.ml.runtimes import (
    INT8,
    NOT_CHECKED,
    OPENVINO,
    candidate_names,
    runtime_and_precision,
    runtime_forward,
)
from shared.registry.files import INT8_FILE
from shared.registry.local import LocalRegistry

# OpenVINO and ONNX Runtime run the same QDQ graph (same int8 weights, scales and zero
# points) but round an activation on a level's edge, and sum, in their own order: a feature
# may move by a quantization step, which the float head turns into softmax differences of a
# few thousandths. A hundredth still catches a wrong output, order or input scaling (those
# differ by tenths).
PROBABILITY_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def int8_file(int8_copy: tuple[LocalRegistry, str]) -> Path:
    registry, version = int8_copy
    path = registry.verified_file(version, INT8_FILE)
    assert path is not None
    return path


def test_openvino_on_the_int8_copy_answers_as_onnx_runtime_at_any_batch_size(
        int8_file: Path) -> None:
    openvino = runtime_forward(OPENVINO, int8_file, with_features=True, threads=2)
    onnx = runtime_forward(INT8, int8_file, with_features=True)
    softmax_only = runtime_forward(OPENVINO, int8_file, with_features=False)
    rng = np.random.default_rng(0)
    for n in (1, 3, 16, 17, 2):  # the batcher's sizes change pass by pass
        batch = to_model_input(rng.uniform(0, 255, (n, 32, 32, 3)).astype(np.float32))
        (features, probabilities), (want_features, want) = openvino(batch), onnx(batch)
        assert features.shape == want_features.shape and probabilities.shape == (n, 3)
        assert np.abs(probabilities - want).max() < PROBABILITY_TOLERANCE
        assert np.allclose(probabilities.sum(1), 1, atol=1e-5)
        assert np.array_equal(softmax_only(batch), probabilities)
    # a pass's outputs are its own: the next pass does not write over them
    kept = openvino(batch)[1]
    copy = kept.copy()
    openvino(batch[::-1].copy())
    assert np.array_equal(kept, copy)


def test_openvino_answers_are_called_openvino_int8() -> None:
    assert runtime_and_precision(OPENVINO) == ("openvino", "int8")
    assert runtime_and_precision(INT8) == ("onnx", "int8")
    assert runtime_and_precision("onnx") == ("onnx", "float32")
    with pytest.raises(ValueError, match="no runtime"):
        runtime_forward("tensorflow", Path("model.onnx"), with_features=False)


def test_openvino_is_a_candidate_only_where_its_check_passed_and_int8_is_allowed(
        tmp_path: Path) -> None:
    onnx, int8 = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert candidate_names("auto", "auto", onnx, int8, openvino_refusal=None) == [
        "onnx", "tensorflow", INT8, OPENVINO]
    assert candidate_names("auto", "int8", onnx, int8, openvino_refusal=None) == [
        INT8, OPENVINO]
    assert candidate_names("auto", "auto", onnx, int8) == ["onnx", "tensorflow", INT8]
    assert candidate_names("auto", "auto", onnx, int8, openvino_refusal="not passed") == [
        "onnx", "tensorflow", INT8]
    assert OPENVINO not in candidate_names("auto", "float32", onnx, int8, openvino_refusal=None)
    assert OPENVINO not in candidate_names("auto", "auto", onnx, None, openvino_refusal=None)
    # naming a runtime serves with that runtime only
    assert OPENVINO not in candidate_names("onnx", "auto", onnx, int8, openvino_refusal=None)
    assert OPENVINO not in candidate_names("tensorflow", "auto", onnx, int8,
                                           openvino_refusal=None)


def test_naming_openvino_serves_it_where_it_may_and_else_falls_back_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx, int8 = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert Settings(inference_runtime="openvino").inference_runtime == "openvino"
    assert candidate_names("openvino", "auto", onnx, int8, openvino_refusal=None) == [OPENVINO]
    assert candidate_names("openvino", "int8", onnx, int8, openvino_refusal=None) == [OPENVINO]
    assert not caplog.records
    fallbacks: list[tuple[Precision, Path | None, Path | None, str | None, list[str], str]] = [
        ("auto", onnx, int8, NOT_CHECKED, [INT8], NOT_CHECKED),
        ("int8", onnx, int8, "its OpenVINO check did not pass", [INT8], "did not pass"),
        ("auto", onnx, None, None, ["onnx"], "no INT8 copy"),
        ("auto", None, None, None, ["tensorflow"], "no ONNX export"),
        ("float32", onnx, int8, None, ["onnx"], "float32"),
    ]
    for precision, onnx_file, int8_file, refusal, names, why in fallbacks:
        caplog.clear()
        assert candidate_names("openvino", precision, onnx_file, int8_file, "v1",
                               openvino_refusal=refusal) == names
        assert any(r.levelname == "WARNING" and why in r.getMessage() for r in caplog.records)
