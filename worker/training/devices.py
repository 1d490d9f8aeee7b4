"""How a training process uses its machine: threads, XLA, mixed precision, several GPUs.

The choices are settings (``CXR_WORKER_THREADS``, ``CXR_TRAIN_JIT_COMPILE``,
``CXR_MIXED_PRECISION``), taken from measurements (bench/train_step.py, bench/gpu_keras.py),
and recorded in each manifest so a result can be traced to how it was computed.

With more than one GPU the model is mirrored on every one (``tf.distribute.MirroredStrategy``,
keras-io ``guides/distributed_training_with_tensorflow.py``): models, optimizers and metrics
are created under :meth:`TrainingDevices.scope`. A request's ``batch_size`` is the global
batch, split across the replicas, so steps per epoch and the learning rate mean the same
whatever the host; ``worker.data.prepared.replica_batch`` keeps each batch divisible by the
replica count.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.config import Settings
from shared.manifest import DevicesRecord

log = logging.getLogger(__name__)

# float16 Tensor Cores arrived with Volta (compute capability 7.0); older GPUs run
# mixed_float16 slower than float32 (TensorFlow's mixed precision guide).
FLOAT16_MIN_CAPABILITY = (7, 0)


def precision_policy(choice: str, capabilities: Sequence[tuple[int, int] | None]) -> str:
    """The Keras dtype policy: mixed_float16 under "auto" only when there are GPUs and every
    one has float16 Tensor Cores (an unknown capability counts as none); else float32."""
    if choice != "auto" or not capabilities:
        return "float32"
    if all(c is not None and tuple(c) >= FLOAT16_MIN_CAPABILITY for c in capabilities):
        return "mixed_float16"
    return "float32"


def resolve_jit(choice: bool | str, gpus: int, replicas: int) -> bool:
    """XLA for training steps: "auto" is on with a GPU. Never across replicas: Keras compiles
    the whole ``strategy.run`` step, which XLA refuses (variables on another device), and
    Keras' own "auto" turns it off under tf.distribute for the same reason."""
    wanted = gpus > 0 if choice == "auto" else bool(choice)
    if wanted and replicas > 1:
        if choice is True:
            log.warning("CXR_TRAIN_JIT_COMPILE=true ignored: XLA cannot compile a step "
                        "mirrored over %d replicas", replicas)
        return False
    return wanted


@dataclass
class TrainingDevices:
    """The machine a job trains on, as the settings choose to use it."""

    threads: int | None = None
    jit_compile: bool | str = "auto"  # resolved to a bool by configure()
    mixed_precision: str = "off"
    # The strategy's devices: None mirrors every GPU TensorFlow sees (one GPU or none: the
    # default strategy). Tests name logical CPU devices here.
    devices: list[str] | None = None
    _strategy: Any = field(default=None, repr=False)
    _gpus: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingDevices:
        return cls(threads=settings.worker_threads, jit_compile=settings.train_jit_compile,
                   mixed_precision=settings.mixed_precision)

    def configure(self) -> None:
        """Apply the choices; before any TensorFlow work in this process."""
        import keras
        import tensorflow as tf

        if self.threads is not None:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(self.threads)
            except RuntimeError:
                log.warning("TensorFlow already started: CXR_WORKER_THREADS not applied")
        gpus = tf.config.list_physical_devices("GPU")
        self._gpus = len(gpus)
        capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability")
                        for gpu in gpus]
        # set every time: the policy is process-global and outlives a job
        keras.mixed_precision.set_global_policy(
            precision_policy(self.mixed_precision, capabilities))
        devices = self.devices if self.devices is not None else (
            [device.name for device in tf.config.list_logical_devices("GPU")])
        self._strategy = tf.distribute.MirroredStrategy(devices) if len(devices) > 1 else None
        self.jit_compile = resolve_jit(self.jit_compile, self._gpus, self.replicas)
        log.info("training devices: %s (GPU compute capabilities %s)",
                 self.describe().model_dump(), capabilities)

    @property
    def replicas(self) -> int:
        return int(self._strategy.num_replicas_in_sync) if self._strategy else 1

    def scope(self) -> Any:
        """Where models, optimizers and metrics are created and fitted: every replica's, or
        the default."""
        return self._strategy.scope() if self._strategy else contextlib.nullcontext()

    def build_for_fit(self, model: Any, batches: Any) -> None:
        """Build a compiled model's optimizer, loss and metrics for ``batches`` (a
        ``tf.data`` dataset) before ``fit``. Keras does so itself only under a strategy;
        otherwise they are built inside the first traced step, and a step that creates
        variables is traced twice (1.5 s of a tiny job)."""
        import tensorflow as tf

        spec = getattr(batches, "element_spec", None)
        build = getattr(model, "_symbolic_build", None)  # Keras' own, private: may go
        if spec is None or build is None:
            return
        example = tuple(tf.zeros([1, *s.shape[1:]], s.dtype) for s in tf.nest.flatten(spec))
        with self.scope():
            build(data_batch=example)

    def describe(self) -> DevicesRecord:
        """What a manifest records of how a phase used the machine."""
        import keras

        return DevicesRecord(
            gpus=self._gpus, threads=self.threads or os.cpu_count(),
            # None until configure() resolves "auto"
            jit_compile=self.jit_compile if isinstance(self.jit_compile, bool) else None,
            precision_policy=keras.mixed_precision.global_policy().name,
            strategy=type(self._strategy).__name__ if self._strategy else "default",
            replicas=self.replicas,
            devices=list(self._strategy.extended.worker_devices) if self._strategy else None,
            onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "tensorflow default"))
