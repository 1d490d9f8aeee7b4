"""Runtimes of a loaded version: TensorFlow graph and ONNX Runtime agree; the choice is
measured; a tampered export is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.errors import ModelLoadFailed
from shared.inference import ONNX_FILE, load_version, preferred_batch, warm_batch_sizes
from shared.local_registry import LocalRegistry
from shared.modeling import ModelConfig, build_model
from shared.registry import MODEL_FILE, Registry
from worker import onnx_export


def _publish_with_onnx(registry: Registry) -> str:
    import keras

    keras.utils.set_random_seed(3)
    staging = registry.new_staging()
    model = build_model(ModelConfig(num_classes=3, image_size=32))
    model.save(staging / MODEL_FILE)
    inputs = np.random.default_rng(0).uniform(-120, 150, (4, 32, 32, 3)).astype(np.float32)
    report = onnx_export.export(model, staging, inputs)
    manifest = {"created_at": "2026-01-01T00:00:00+00:00", "classes": ["a", "b", "c"],
                "image_size": 32, "dataset": {"name": "t"}, "parent": None, "onnx": report}
    return registry.publish(staging, manifest, activate=False)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, str]:
    registry = LocalRegistry(tmp_path_factory.mktemp("models"))
    return registry, _publish_with_onnx(registry)


def test_warm_batch_sizes_cover_powers_of_two_and_the_largest() -> None:
    assert warm_batch_sizes(1) == [1]
    assert warm_batch_sizes(16) == [1, 2, 4, 8, 16]
    assert warm_batch_sizes(12) == [1, 2, 4, 8, 12]


def test_the_preferred_batch_is_the_smallest_within_tolerance_of_the_fastest() -> None:
    # seconds per image by batch size, as choose_runtime measures them
    assert preferred_batch({1: 0.100, 2: 0.104, 4: 0.110}) == 1  # ONNX Runtime on 2 cores
    assert preferred_batch({1: 0.180, 2: 0.140, 4: 0.118, 8: 0.105, 16: 0.103}) == 8
    assert preferred_batch({1: 0.2, 2: 0.1}, tolerance=0.0) == 2


def test_auto_sets_a_batch_size_it_timed(published: tuple[Registry, str]) -> None:
    registry, version = published
    loaded = load_version(registry, version, runtime="auto", warm_batch_sizes=(1, 2, 4))
    assert loaded.batch_size in {1, 2, 4}


def test_a_graph_timed_before_is_not_timed_again(
        published: tuple[Registry, str], caplog: pytest.LogCaptureFixture) -> None:
    registry, version = published
    timings: dict = {}  # type: ignore[type-arg]
    first = load_version(registry, version, runtime="auto", warm_batch_sizes=(1, 2),
                         timings=timings)
    assert list(timings.values()) == [(first.runtime, first.batch_size)]
    caplog.set_level("INFO", logger="shared.inference")
    again = load_version(registry, version, runtime="auto", warm_batch_sizes=(1, 2),
                         timings=timings)
    assert (again.runtime, again.batch_size) == (first.runtime, first.batch_size)
    assert "as timed for the same graph before" in caplog.text
    pixels = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(again.probabilities(pixels), first.probabilities(pixels),
                               atol=1e-6)


def test_the_export_is_checked_and_both_runtimes_agree(published: tuple[Registry, str]) -> None:
    registry, version = published
    report = registry.manifest(version)["onnx"]
    assert report["file"] == ONNX_FILE and report["max_difference"] < 1e-4
    pixels = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    tf_model = load_version(registry, version, runtime="tensorflow")
    onnx_model = load_version(registry, version, runtime="onnx", warm_batch_sizes=(1, 2, 4))
    assert (tf_model.runtime, onnx_model.runtime) == ("tensorflow", "onnx")
    np.testing.assert_allclose(onnx_model.probabilities(pixels), tf_model.probabilities(pixels),
                               atol=1e-5)
    # the graph gives what Keras' own call gives
    from shared.preprocessing import to_model_input

    keras_out = np.asarray(tf_model.model(to_model_input(pixels), training=False))
    np.testing.assert_allclose(tf_model.probabilities(pixels), keras_out, atol=1e-6)


def test_auto_keeps_one_of_the_runtimes_it_timed(published: tuple[Registry, str]) -> None:
    registry, version = published
    assert load_version(registry, version, runtime="auto").runtime in {"tensorflow", "onnx"}


def test_without_an_export_onnx_falls_back_to_tensorflow(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path)
    staging = registry.new_staging()
    build_model(ModelConfig(num_classes=3, image_size=32)).save(staging / MODEL_FILE)
    version = registry.publish(staging, {"created_at": "2026-01-01T00:00:00+00:00",
                                         "classes": ["a", "b", "c"], "image_size": 32,
                                         "dataset": {"name": "t"}, "parent": None})
    assert load_version(registry, version, runtime="onnx").runtime == "tensorflow"


def test_a_tampered_export_is_not_served(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path)
    version = _publish_with_onnx(registry)
    path = registry.version_dir(version) / ONNX_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelLoadFailed, match="checksum"):
        load_version(registry, version, runtime="auto")
    assert load_version(registry, version, runtime="tensorflow").runtime == "tensorflow"
