"""How a training process uses its machine: threads, XLA, mixed precision, several GPUs.

The choices are settings (``CXR_WORKER_THREADS``, ``CXR_TRAIN_JIT_COMPILE``,
``CXR_MIXED_PRECISION``), taken from measurements (bench/train_step.py), and recorded in each
manifest so a result can be traced to how it was computed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from shared.config import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    max_pixels: int
    threads: int | None = None
    jit_compile: bool | str = "auto"  # resolved to a bool by configure()
    mixed_precision: str = "off"
    _strategy: Any = field(default=None, repr=False)
    _gpus: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(max_pixels=settings.max_image_pixels, threads=settings.worker_threads,
                   jit_compile=settings.train_jit_compile,
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
        self._gpus = len(tf.config.list_physical_devices("GPU"))
        if self.jit_compile == "auto":
            self.jit_compile = self._gpus > 0
        if self.mixed_precision == "auto" and self._gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
        if self._gpus > 1:
            self._strategy = tf.distribute.MirroredStrategy()

    def scope(self) -> Any:
        """Where models and optimizers are created: every GPU's replica, or the default."""
        return self._strategy.scope() if self._strategy else contextlib.nullcontext()

    def describe(self) -> dict[str, Any]:
        import keras

        return {"gpus": self._gpus, "threads": self.threads or os.cpu_count(),
                "jit_compile": self.jit_compile,
                "precision_policy": keras.mixed_precision.global_policy().name,
                "strategy": type(self._strategy).__name__ if self._strategy else "default",
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "tensorflow default")}
