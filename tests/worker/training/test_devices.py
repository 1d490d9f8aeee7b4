"""The training devices: precision and XLA choices, and real training mirrored over two
replicas (two logical CPU devices, in a fresh process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.schemas import JobProgress
from shared.training_params import TrainingParams
from tests.helpers.env import REPO
from tests.helpers.versions import Recorder
from worker.data.prepared import replica_batch
from worker.training import checkpoints
from worker.training.devices import TrainingDevices, precision_policy, resolve_jit

# Both phases, the head on cached features; an odd global batch; the cosine schedule (set
# from a callback); every epoch kept (no early stopping), so the second one's update is seen.
TINY = {"epochs": 2, "fine_tune_epochs": 1, "image_size": 32, "base_weights": "file",
        "head_cache_views": 1, "batch_size": 5, "seed": 7, "early_stopping_patience": 0,
        "lr_schedule": "cosine", "warmup_fraction": 0.0}


def test_a_model_built_before_fit_traces_its_train_step_once() -> None:
    import keras
    import tensorflow as tf

    traces: list[int] = []

    class Counted(keras.Model):
        def train_step(self, data: Any) -> Any:
            traces.append(1)  # Python runs only while the step is traced
            return super().train_step(data)

    def compiled() -> Any:
        inputs = keras.Input((4,))
        model = Counted(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    data = tf.data.Dataset.from_tensor_slices(
        (np.zeros((16, 4), np.float32), np.arange(16) % 3)).batch(8)
    compiled().fit(data, epochs=2, verbose=0, shuffle=False)
    assert len(traces) == 2  # its variables made inside the first trace: traced again
    traces.clear()
    model = compiled()
    TrainingDevices().build_for_fit(model, data)
    model.fit(data, epochs=2, verbose=0, shuffle=False)
    assert len(traces) == 1


def test_mixed_float16_only_when_every_gpu_has_float16_tensor_cores() -> None:
    assert precision_policy("auto", [(9, 0)]) == "mixed_float16"
    assert precision_policy("auto", [(7, 0), (8, 6)]) == "mixed_float16"
    assert precision_policy("auto", [(8, 0), (6, 1)]) == "float32"  # one Pascal among them
    assert precision_policy("auto", [(9, 0), None]) == "float32"  # capability unknown
    assert precision_policy("auto", []) == "float32"  # no GPU
    assert precision_policy("off", [(9, 0)]) == "float32"


def test_xla_is_off_across_replicas() -> None:
    assert resolve_jit("auto", gpus=1, replicas=1) is True
    assert resolve_jit("auto", gpus=0, replicas=1) is False
    assert resolve_jit("auto", gpus=2, replicas=2) is False
    assert resolve_jit(True, gpus=2, replicas=2) is False
    assert resolve_jit(True, gpus=0, replicas=1) is True


def test_global_batches_split_evenly_across_replicas() -> None:
    assert replica_batch(16, 100, 1) == 16 and replica_batch(16, 5, 1) == 16
    assert replica_batch(16, 100, 2) == 16
    assert replica_batch(15, 100, 2) == 14
    assert replica_batch(8, 7, 2) == 6  # a small split: batches of 6 and 1
    assert replica_batch(3, 100, 4) == 4


def test_a_mixed_precision_model_is_published_in_float32() -> None:
    import keras

    from shared.ml.modeling import ModelConfig, build_model
    from worker.training.fit import float32_copy

    config, devices = ModelConfig(3, 32), TrainingDevices()
    x = np.random.default_rng(0).uniform(-120, 150, (4, 32, 32, 3)).astype(np.float32)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_model(config)
        copy = float32_copy(mixed, config, devices)
        assert keras.mixed_precision.global_policy().name == "mixed_float16"  # still recorded
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("block1_conv1").compute_dtype == "float16"
    assert {layer.compute_dtype for layer in copy.layers if layer.weights} == {"float32"}
    for ours, theirs in zip(copy.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(copy.predict(x, verbose=0), mixed.predict(x, verbose=0),
                               atol=1e-2)
    assert float32_copy(copy, config, devices) is copy  # float32 training: the model itself


class EpochCopies(Recorder):
    """Keeps a copy of each epoch's checkpoint (written before progress is reported)."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__()
        self.checkpoint = checkpoint

    def epoch_end(self, progress: JobProgress) -> bool:
        shutil.copy(self.checkpoint / checkpoints.WEIGHTS_FILE,
                    self.checkpoint.parent / f"epoch{progress.epoch}.weights.h5")
        return super().epoch_end(progress)


def _two_replica_training(dataset_dir: str, work: str) -> None:
    """Runs in a child process: two logical CPUs must be declared before TensorFlow starts."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras

    from shared.config import Settings
    from shared.datasets import discover
    from shared.ml.modeling import ModelConfig, build_model, load_model
    from worker.context import JobContext
    from worker.evaluation.assessment import assess
    from worker.training.fit import Start, train_model

    dataset, folder = discover(Path(dataset_dir)), Path(work)
    params = TrainingParams(dataset="tiny", **TINY)  # type: ignore[arg-type]
    base = folder / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None,
                             input_shape=(32, 32, 3)).save_weights(base)
    devices = TrainingDevices(mixed_precision="auto", devices=["/cpu:0", "/cpu:1"])
    context = JobContext(Settings(), EpochCopies(folder / "checkpoint"), folder / "checkpoint")
    result = train_model(dataset, params, Start(weights=base), context, devices)
    model, inputs = result.model, result.data.model_inputs("test", 4)
    assessment = assess(model, result.data, dataset.classes, params, scope=devices.scope)
    trained = np.asarray(model.predict(inputs, verbose=0))
    model.save(folder / "model.keras")

    def from_weights(path: Path) -> Any:  # a resumed job's restore, into a mirrored model
        with devices.scope():
            fresh = build_model(ModelConfig(len(dataset.classes), params.image_size))
        fresh.load_weights(path)
        return fresh

    epoch1 = from_weights(folder / "epoch1.weights.h5")
    restored = from_weights(folder / "checkpoint" / checkpoints.WEIGHTS_FILE)
    mirrored = [weight.value for weight in model.weights]
    facts = {
        "runtime": devices.describe().model_dump(),
        "variables": sorted({type(v).__name__ for v in mirrored}),
        "replica_devices": [v.device for v in mirrored[0].values],
        "replicas_equal": all(np.array_equal(v.values[0].numpy(), v.values[1].numpy())
                              for v in mirrored),
        "history_loss": result.history["loss"],
        "learning_rates": result.history["learning_rate"],
        "rate_per_replica": [float(v.numpy()) for v in model.optimizer.learning_rate.value.values],
        "changed_since_epoch1": sum(not np.array_equal(a, b) for a, b in
                                 zip(epoch1.get_weights(), model.get_weights(), strict=True)),
        "reload_gap": float(np.max(np.abs(
            np.asarray(load_model(folder / "model.keras").predict(inputs, verbose=0)) - trained))),
        "restore_gap": float(np.max(np.abs(
            np.asarray(restored.predict(inputs, verbose=0)) - trained))),
        "phases": [phase.model_dump() for phase in result.phases],
        "test_images": assessment.metrics.test.images if assessment.metrics.test else 0,
    }
    (folder / "facts.json").write_text(json.dumps(facts))


@pytest.mark.trains
def test_training_mirrored_over_two_replicas(tiny_dataset: Path, tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.worker.training.test_devices import "
         "_two_replica_training as run; run(sys.argv[1], sys.argv[2])",
         str(tiny_dataset), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert child.returncode == 0, child.stderr[-4000:]
    facts: dict[str, Any] = json.loads((tmp_path / "facts.json").read_text())
    runtime = facts["runtime"]
    assert runtime["strategy"] == "MirroredStrategy" and runtime["replicas"] == 2
    assert [d.split("/")[-1] for d in runtime["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert runtime["precision_policy"] == "float32" and runtime["jit_compile"] is False  # no GPU
    assert facts["variables"] == ["MirroredVariable"] and facts["replicas_equal"]
    assert [d.split("/")[-1] for d in facts["replica_devices"]] == ["device:CPU:0",
                                                                  "device:CPU:1"]
    assert len(facts["history_loss"]) == 3 and all(np.isfinite(facts["history_loss"]))
    assert facts["changed_since_epoch1"] > 0
    rates = facts["learning_rates"]
    assert rates[0] > rates[1] and rates[2] < rates[0]
    assert facts["rate_per_replica"] == [rates[2]] * 2  # the callback's rate reached both
    assert facts["reload_gap"] < 1e-5 and facts["restore_gap"] < 1e-5
    assert [(p["phase"], p["runtime"]["replicas"]) for p in facts["phases"]] == [
        ("head", 2), ("fine_tune", 2)]
    assert facts["test_images"] > 0


