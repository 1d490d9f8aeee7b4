"""Runtimes of a loaded version: TensorFlow graph and ONNX Runtime agree; the choice is
measured; a tampered export is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.errors import ModelLoadFailed
from shared.loading import load_version
from shared.ml.modeling import ModelConfig, build_model
from shared.ml.runtimes import (
    choose_runtime,
    pick_runtime,
    preferred_batch,
    runtime_and_precision,
    warm_batch_sizes,
)
from shared.registry import Registry
from shared.registry.files import MODEL_FILE, ONNX_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.versions import Trained, draft


def _copy_of(trained: Trained, root: Path) -> tuple[LocalRegistry, str]:
    """The suite's trained version (with its checked ONNX export) in a registry of its own."""
    shutil.copytree(trained.registry.version_dir(trained.version), root / trained.version)
    return LocalRegistry(root), trained.version


@pytest.fixture(scope="module")
def published(trained: Trained, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Registry, str]:
    return _copy_of(trained, tmp_path_factory.mktemp("models"))


def test_warm_batch_sizes_cover_powers_of_two_and_the_largest() -> None:
    assert warm_batch_sizes(1) == [1]
    assert warm_batch_sizes(16) == [1, 2, 4, 8, 16]
    assert warm_batch_sizes(12) == [1, 2, 4, 8, 12]


def test_the_preferred_batch_is_the_smallest_within_tolerance_of_the_fastest() -> None:
    # seconds per image by batch size, as choose_runtime measures them
    assert preferred_batch({1: 0.100, 2: 0.104, 4: 0.110}) == 1  # ONNX Runtime on 2 cores
    assert preferred_batch({1: 0.180, 2: 0.140, 4: 0.118, 8: 0.105, 16: 0.103}) == 8
    assert preferred_batch({1: 0.2, 2: 0.1}, tolerance=0.0) == 2


def test_auto_picks_by_latency_plus_throughput() -> None:
    # ONNX Runtime fastest alone, TensorFlow at batches: the sum decides
    onnx, tensorflow = {1: 0.100, 2: 0.098, 4: 0.097}, {1: 0.180, 2: 0.120, 4: 0.060}
    assert pick_runtime({"onnx": onnx, "tensorflow": tensorflow}) == ("onnx", 1)
    tensorflow[4] = 0.010
    assert pick_runtime({"onnx": onnx, "tensorflow": tensorflow}) == ("tensorflow", 4)


def test_auto_times_every_runtime_at_every_batch_and_serves_its_pick(
        published: tuple[Registry, str]) -> None:
    registry, version = published
    loaded = load_version(registry, version)
    onnx_file = registry.verified_file(version, ONNX_FILE)
    assert loaded.shift is not None
    choice = choose_runtime(loaded.model, loaded.image_size, loaded.shift.layout, onnx_file,
                            "auto", batch_sizes=(1, 2, 4))
    assert {name: sorted(p) for name, p in choice.profiles.items()} == {
        "onnx": [1, 2, 4], "tensorflow": [1, 2, 4]}
    assert (choice.runtime, choice.batch_size) == pick_runtime(choice.profiles)


def test_a_graph_timed_before_is_not_timed_again(
        published: tuple[Registry, str], caplog: pytest.LogCaptureFixture) -> None:
    registry, version = published
    timings: dict = {}  # type: ignore[type-arg]
    first = load_version(registry, version, runtime="auto", warm_batch_sizes=(1, 2),
                         timings=timings)
    assert [(runtime_and_precision(name), batch) for name, batch in timings.values()] == [
        ((first.runtime, first.precision), first.batch_size)]
    caplog.set_level("INFO", logger="shared.ml.runtimes")
    again = load_version(registry, version, runtime="auto", warm_batch_sizes=(1, 2),
                         timings=timings)
    assert (again.runtime, again.precision, again.batch_size) == (
        first.runtime, first.precision, first.batch_size)
    assert "as timed for the same graph before" in caplog.text
    pixels = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(again.probabilities(pixels), first.probabilities(pixels),
                               atol=1e-6)


def test_the_export_is_checked_and_both_runtimes_agree(published: tuple[Registry, str]) -> None:
    registry, version = published
    report = registry.manifest(version).onnx
    assert report is not None and report.file == ONNX_FILE
    assert report.max_difference is not None and report.max_difference < 1e-4
    pixels = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    tf_model = load_version(registry, version, runtime="tensorflow")
    onnx_model = load_version(registry, version, runtime="onnx", warm_batch_sizes=(1, 2, 4),
                              precision="float32")
    assert (tf_model.runtime, onnx_model.runtime) == ("tensorflow", "onnx")
    assert onnx_model.precision == "float32"
    np.testing.assert_allclose(onnx_model.probabilities(pixels), tf_model.probabilities(pixels),
                               atol=1e-5)
    # the graph gives what Keras' own call gives
    from shared.ml.calibration import apply_temperature
    from shared.ml.preprocessing import to_model_input

    keras_out = np.asarray(tf_model.model(to_model_input(pixels), training=False))
    np.testing.assert_allclose(tf_model.probabilities(pixels),
                               apply_temperature(keras_out, tf_model.temperature), atol=1e-6)


def test_without_an_export_onnx_falls_back_to_tensorflow(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path)
    staging = registry.new_staging()
    build_model(ModelConfig(num_classes=3, image_size=32)).save(staging / MODEL_FILE)
    version = registry.publish(staging, draft())
    assert load_version(registry, version, runtime="onnx").runtime == "tensorflow"


def test_a_tampered_export_is_not_served(trained: Trained, tmp_path: Path) -> None:
    registry, version = _copy_of(trained, tmp_path)
    path = registry.version_dir(version) / ONNX_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelLoadFailed, match="checksum"):
        load_version(registry, version, runtime="auto")
    assert load_version(registry, version, runtime="tensorflow").runtime == "tensorflow"


def test_scoring_in_passes_gives_the_one_pass_answers() -> None:
    from shared.ml.served import serve_model

    served = serve_model("v", ["a", "b", "c"], 32, build_model(ModelConfig(3, 32)),
                         temperature=1.7)
    pixels = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(served.score(pixels, batch_size=2).probabilities,
                               served.infer(pixels).probabilities, atol=1e-6)
    assert served.score(pixels[:0]).probabilities.shape == (0, 3)


def test_the_gate_features_screening_made_give_the_answers_computed_afresh(
        published: tuple[Registry, str]) -> None:
    """Screening computes the gate's features once; the shift reference's input detector then
    reads them instead of computing them again in the pass: the answers are the same."""
    from shared.ml.screening import ImageLimits
    from tests.helpers.env import RADIOGRAPHY, real_data, sample_files

    registry, version = published
    loaded = load_version(registry, version)
    assert loaded.shift is not None and loaded.shift.needs_inputs
    files = [p for paths in sample_files(real_data(RADIOGRAPHY), 2).values() for p in paths]
    screened = [loaded.screen_file(p.read_bytes(), ImageLimits(gate="warn")) for p in files]
    assert all(s.inputs is not None for s in screened)
    pixels = np.stack([s.pixels for s in screened])
    given = loaded.predict_batch(pixels, np.stack([s.inputs for s in screened if s.inputs
                                                   is not None]))
    afresh = loaded.predict_batch(pixels)
    assert [a.distribution_shift for a in given] == [a.distribution_shift for a in afresh]
    assert [a.probabilities for a in given] == [a.probabilities for a in afresh]
