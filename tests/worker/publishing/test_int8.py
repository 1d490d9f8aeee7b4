"""The INT8 copy: made from the ONNX export, checked beside it on held-out images, kept only
within the limits; served where it was kept unless float is required."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shared.config import Settings
from shared.loading import load_version
from shared.manifest import Int8Check
from shared.ml.runtimes import INT8, candidate_names
from shared.ml.served import ServedVersion
from shared.registry.files import INT8_FILE, ONNX_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.versions import Trained, int8_data
from worker.publishing.int8 import Int8Data, Int8Policy, export_int8, refusals


@pytest.fixture(scope="module")
def float_version(trained: Trained) -> tuple[ServedVersion, Path, Int8Data]:
    loaded = load_version(trained.registry, trained.version)
    float_file = trained.registry.verified_file(trained.version, ONNX_FILE)
    assert float_file is not None
    return loaded, float_file, int8_data(trained, loaded)


def test_each_published_version_records_its_check_and_keeps_the_copy_only_within_limits(
        trained: Trained) -> None:
    manifest = trained.registry.manifest(trained.version)
    record = manifest.int8
    assert record is not None and record.check is not None
    assert record.calibration == "minmax" and record.calibration_images == 24  # all training
    assert manifest.split.test is not None
    assert record.check.images == sum(manifest.split.test.counts.values())
    policy = Int8Policy(min_agreement=record.min_agreement or 0,
                        max_balanced_accuracy_drop=record.max_balanced_accuracy_drop or 0)
    assert (policy.min_agreement, policy.max_balanced_accuracy_drop) == (0.99, 0.005)
    why = refusals(record.check, policy)
    assert (INT8_FILE in manifest.files) == (record.file == INT8_FILE) == (not why)
    if why:
        assert record.error == "not kept: " + "; ".join(why)


def test_a_copy_within_the_limits_is_kept_with_its_figures(
        int8_copy: tuple[LocalRegistry, str], trained: Trained) -> None:
    registry, version = int8_copy
    manifest = registry.manifest(version)
    record = manifest.int8
    assert record is not None and record.file == INT8_FILE and record.error is None
    assert INT8_FILE in manifest.files
    int8, float_file = (registry.verified_file(version, name) for name in (INT8_FILE, ONNX_FILE))
    assert int8 is not None and float_file is not None
    assert int8.stat().st_size < 0.4 * float_file.stat().st_size  # int8 weights
    check = record.check
    assert check is not None and check.images == 36 and record.calibration_images == 12
    assert 0 <= check.top1_agreement <= 1 and check.max_probability_difference < 0.05
    assert check.shift_flag_agreement is not None


def test_a_copy_calibrated_on_unlike_images_is_dropped_with_the_reason(
        float_version: tuple[ServedVersion, Path, Int8Data], tmp_path: Path) -> None:
    _, float_file, data = float_version
    # Flat grey frames: activation ranges far narrower than a radiograph's.
    grey = np.full((12, *data.test.shape[1:]), 128, np.float32)
    unlike = replace(data, train=grey)
    record = export_int8(tmp_path, float_file, unlike, Int8Policy())
    assert record.check is not None and record.file is None
    assert not (tmp_path / INT8_FILE).exists()
    why = refusals(record.check, Int8Policy())
    assert why and record.error == "not kept: " + "; ".join(why)


def test_refusals_name_each_limit_crossed() -> None:
    policy = Int8Policy(min_agreement=0.99, max_balanced_accuracy_drop=0.005)
    fine = Int8Check(images=200, top1_agreement=0.99, balanced_accuracy_float=0.900,
                     balanced_accuracy_int8=0.895, max_probability_difference=0.01,
                     shift_flag_agreement=1.0)
    assert refusals(fine, policy) == []
    worse = fine.model_copy(update={"top1_agreement": 0.985, "balanced_accuracy_int8": 0.89,
                                    "shift_flag_agreement": 0.98})
    assert [w.split()[0] for w in refusals(worse, policy)] == ["top-1", "balanced", "the"]


def test_the_runtimes_considered_follow_the_precision_setting(tmp_path: Path) -> None:
    onnx, int8 = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert candidate_names("auto", "auto", onnx, int8) == ["onnx", "tensorflow", INT8]
    assert INT8 not in candidate_names("auto", "float32", onnx, int8)
    assert INT8 not in candidate_names("tensorflow", "auto", onnx, int8)
    assert candidate_names("auto", "int8", onnx, int8) == [INT8]
    assert candidate_names("auto", "int8", onnx, None) == ["onnx", "tensorflow"]
    with pytest.raises(ValueError, match="INFERENCE_PRECISION"):
        Settings(inference_precision="int8", inference_runtime="tensorflow")
    # the setting's older name for float32 still reads
    assert Settings(inference_precision="float").inference_precision == "float32"


def test_a_kept_copy_serves_the_float_answers_and_float_never_serves_it(
        int8_copy: tuple[LocalRegistry, str],
        float_version: tuple[ServedVersion, Path, Int8Data]) -> None:
    registry, version = int8_copy
    float_model, _, data = float_version
    int8 = load_version(registry, version, runtime="auto", precision="int8")
    assert (int8.runtime, int8.precision) == ("onnx", "int8")
    pixels = data.test[:8]
    expected, got = float_model.predict_batch(pixels), int8.predict_batch(pixels)
    for want, answer in zip(expected, got, strict=True):
        assert answer.precision == "int8" and want.precision == "float32"
        assert answer.label == want.label
        for label, p in want.probabilities.items():
            assert abs(answer.probabilities[label] - p) < 0.05
        assert answer.distribution_shift is not None
    strict = load_version(registry, version, runtime="auto", precision="float32")
    assert strict.precision == "float32" and strict.runtime in ("onnx", "tensorflow")
    assert {a.precision for a in strict.predict_batch(pixels)} == {"float32"}
