"""The INT8 copy: made from the ONNX export, checked beside it on held-out images, kept only
within the limits; served where it was kept unless float is required. OpenVINO on a kept copy:
checked the same way, and a candidate only where that check passed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from shared.config import Settings
from shared.loading import load_version, openvino_refusal
from shared.manifest import Int8Check
from shared.ml.runtimes import (
    INT8,
    NOT_CHECKED,
    OPENVINO,
    OnnxForward,
    candidate_names,
    choose_runtime,
    pick_runtime,
)
from shared.ml.served import ServedVersion
from shared.registry.files import INT8_FILE, ONNX_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.versions import Trained, int8_data, republish
from tests.shared.ml.test_runtimes import PROBABILITY_TOLERANCE
from worker.publishing.int8 import (
    Int8Data,
    Int8Policy,
    check_openvino,
    export_int8,
    outputs_of,
    refusals,
)


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


def test_each_kept_copy_records_its_openvino_check_under_the_same_limits(
        trained: Trained) -> None:
    manifest = trained.registry.manifest(trained.version)
    record = manifest.int8
    assert record is not None and record.check is not None
    # the worker reports OpenVINO's images within the copy's phase, which ends once, whether
    # or not there was a copy for OpenVINO to check
    int8_phase = [(done, total) for name, done, total in trained.recorder.phases
                  if name == "int8 copy"]
    total = int8_phase[0][1]
    assert total == record.calibration_images + 3 * record.check.images
    assert [done for done, _ in int8_phase].count(total) == 1
    if record.file is None:  # no copy kept: nothing for OpenVINO to serve
        assert record.openvino is None
        return
    openvino = record.openvino
    assert openvino is not None and openvino.runtime == "openvino"
    assert openvino.runtime_version == ov.__version__
    assert openvino.check is not None and openvino.check.images == record.check.images
    assert openvino.check.balanced_accuracy_float == record.check.balanced_accuracy_float
    why = refusals(openvino.check, Int8Policy(
        min_agreement=record.min_agreement or 0,
        max_balanced_accuracy_drop=record.max_balanced_accuracy_drop or 0))
    assert openvino.passed == (not why)
    assert openvino.error == (None if not why else "not passed: " + "; ".join(why))


def test_the_suites_copy_passed_its_openvino_check_with_its_figures(
        int8_copy: tuple[LocalRegistry, str]) -> None:
    registry, version = int8_copy
    record = registry.manifest(version).int8
    assert record is not None and record.check is not None and record.openvino is not None
    openvino = record.openvino
    assert openvino.passed and openvino.error is None and openvino.check is not None
    assert openvino.check.images == record.check.images == 36
    assert openvino.check.max_probability_difference < 0.05  # as the copy in ONNX Runtime
    assert openvino.check.shift_flag_agreement is not None
    assert openvino_refusal(registry.manifest(version)) is None


@pytest.fixture(scope="module")
def refused(int8_copy: tuple[LocalRegistry, str],
            float_version: tuple[ServedVersion, Path, Int8Data],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalRegistry, str]:
    """The suite's INT8 copy published again with its OpenVINO check held to limits no model
    meets (agreement above 100%)."""
    registry, version = int8_copy
    float_model, float_file, data = float_version
    int8_file = registry.verified_file(version, INT8_FILE)
    assert int8_file is not None
    float_outputs = outputs_of(OnnxForward(float_file, with_features=True), data.test,
                          data.temperature, None)
    check = check_openvino(int8_file, float_outputs, data, Int8Policy(min_agreement=1.01))
    record = registry.manifest(version).int8
    assert record is not None
    target = LocalRegistry(tmp_path_factory.mktemp("refused") / "models")
    return target, republish(registry, version, target, {},
                             int8=record.model_copy(update={"openvino": check}))


def test_openvino_failing_is_recorded_as_its_checks_error(
        float_version: tuple[ServedVersion, Path, Int8Data], tmp_path: Path) -> None:
    _, float_file, data = float_version
    float_outputs = outputs_of(OnnxForward(float_file, with_features=True), data.test[:4],
                               data.temperature, None)
    unreadable = tmp_path / INT8_FILE
    unreadable.write_bytes(b"not an onnx graph")
    check = check_openvino(unreadable, float_outputs, replace(
        data, test=data.test[:4], test_labels=data.test_labels[:4]), Int8Policy())
    assert not check.passed and check.check is None
    assert check.error is not None and check.error.startswith("OpenVINO failed: ")


def test_a_check_outside_the_limits_is_recorded_and_openvino_may_not_serve(
        refused: tuple[LocalRegistry, str], caplog: pytest.LogCaptureFixture) -> None:
    registry, version = refused
    manifest = registry.manifest(version)
    assert manifest.int8 is not None and manifest.int8.file == INT8_FILE
    openvino = manifest.int8.openvino
    assert openvino is not None and openvino.check is not None and not openvino.passed
    assert openvino.error is not None and openvino.error.startswith("not passed: top-1")
    refusal = openvino_refusal(manifest)
    assert refusal is not None and "did not pass" in refusal
    served = load_version(registry, version, runtime="openvino")
    assert (served.runtime, served.precision) == ("onnx", "int8")  # the copy, in ONNX Runtime
    assert any(r.levelname == "WARNING" and "OpenVINO may not serve" in r.getMessage()
               for r in caplog.records)


def test_auto_times_openvino_only_where_its_check_passed(
        int8_copy: tuple[LocalRegistry, str], refused: tuple[LocalRegistry, str]) -> None:
    timed = {}
    for name, (registry, version) in (("passed", int8_copy), ("refused", refused)):
        loaded = load_version(registry, version, runtime="tensorflow")
        assert loaded.shift is not None
        choice = choose_runtime(
            loaded.model, loaded.image_size, loaded.shift.layout,
            registry.verified_file(version, ONNX_FILE), "auto", batch_sizes=(1, 2),
            int8_file=registry.verified_file(version, INT8_FILE), precision="int8",
            openvino_refusal=openvino_refusal(registry.manifest(version)))
        timed[name] = sorted(choice.profiles)
        assert (choice.runtime, choice.batch_size) == pick_runtime(choice.profiles)
    assert timed == {"passed": sorted([INT8, OPENVINO]), "refused": [INT8]}
    # a version published before OpenVINO was checked is as one whose check did not pass
    assert candidate_names("auto", "auto", Path("a.onnx"), Path("b.onnx"), "v",
                           openvino_refusal=NOT_CHECKED) == ["onnx", "tensorflow", INT8]


def test_openvino_serves_int8_answers_as_the_copy_in_onnx_runtime_does(
        int8_copy: tuple[LocalRegistry, str],
        float_version: tuple[ServedVersion, Path, Int8Data],
        caplog: pytest.LogCaptureFixture) -> None:
    registry, version = int8_copy
    _, _, data = float_version
    openvino = load_version(registry, version, runtime="openvino", warm_batch_sizes=(1, 4))
    onnx = load_version(registry, version, runtime="onnx", precision="int8")
    assert (openvino.runtime, openvino.precision) == ("openvino", "int8")
    pixels = data.test[:8]
    for want, answer in zip(onnx.predict_batch(pixels), openvino.predict_batch(pixels),
                            strict=True):
        assert answer.precision == want.precision == "int8"
        for label, p in want.probabilities.items():
            # same graph, same int8 arithmetic: see tests/shared/ml/test_runtimes.py
            assert abs(answer.probabilities[label] - p) < PROBABILITY_TOLERANCE
        assert answer.distribution_shift is not None and want.distribution_shift is not None
    # float required: OpenVINO (INT8 only) gives way to float, with a warning
    strict = load_version(registry, version, runtime="openvino", precision="float32")
    assert (strict.runtime, strict.precision) == ("onnx", "float32")
    assert any(r.levelname == "WARNING" and "float32" in r.getMessage() for r in caplog.records)
