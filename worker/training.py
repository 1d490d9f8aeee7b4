"""Two-phase transfer learning of the VGG16 classifier on a discovered dataset."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared.datasets import Dataset
from shared.errors import InvalidDataset, JobCancelled
from shared.modeling import ModelConfig, build_model, set_phase
from shared.schemas import EpochMetrics, JobProgress, TrainingParams
from worker.datasets import (
    augmentation,
    load_split_pixels,
    make_pipeline,
    split_summary,
    stratified_split,
)
from worker.evaluation import evaluate


class Reporter(Protocol):
    """Where training reports; each call answers whether to stop (cancellation)."""

    def epoch_end(self, progress: JobProgress) -> bool: ...

    def alive(self) -> bool: ...


@dataclass
class TrainingResult:
    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    split: dict[str, Any]
    sample_inputs: np.ndarray
    phases: list[dict[str, Any]] = field(default_factory=list)


def _progress_callback(reporter: Reporter, total_epochs: int, phase: str,
                       heartbeat_s: float = 2.0) -> Any:
    import keras

    class Progress(keras.callbacks.Callback):
        cancelled = False
        _last = 0.0

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            # Keras 3 checks stop_training after every batch: a cancel stops the next one.
            now = time.monotonic()
            if now - self._last >= heartbeat_s:
                self._last = now
                if reporter.alive():
                    self._stop()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            last = EpochMetrics(**{k: float(logs[k]) for k in EpochMetrics.model_fields
                                   if k in logs})
            if reporter.epoch_end(JobProgress(epoch=epoch + 1, epochs=total_epochs,
                                              phase=phase, last=last)):
                self._stop()

        def _stop(self) -> None:
            self.cancelled = True
            self.model.stop_training = True

    return Progress()


def train_model(dataset: Dataset, params: TrainingParams, weights: Path | None,
                reporter: Reporter, max_pixels: int) -> TrainingResult:
    """Split, load, train the head, optionally fine-tune block5, and evaluate on test."""
    import keras

    seed = params.seed if params.seed is not None else 0
    keras.utils.set_random_seed(seed)
    try:
        splits = stratified_split(dataset, params.validation_fraction, params.test_fraction, seed)
    except ValueError as exc:
        raise InvalidDataset(str(exc)) from exc
    arrays = {name: load_split_pixels(split, params.image_size, max_pixels)
              for name, split in splits.items()}
    train = make_pipeline(arrays["train"], splits["train"].labels, params.batch_size,
                          augment=augmentation(seed), shuffle_seed=seed)
    val = make_pipeline(arrays["validation"], splits["validation"].labels, params.batch_size)

    model = build_model(ModelConfig(len(dataset.classes), params.image_size, params.dropout,
                                    weights))
    history: dict[str, list[float]] = {}
    phases = [("head", params.learning_rate, params.epochs)]
    if params.fine_tune:
        phases.append(("fine_tune", params.fine_tune_learning_rate, params.fine_tune_epochs))
    done = 0
    for phase, learning_rate, epochs in phases:
        set_phase(model, phase)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        callback = _progress_callback(reporter, params.total_epochs, phase)
        fitted = model.fit(train, validation_data=val, initial_epoch=done,
                           epochs=done + epochs, callbacks=[callback], shuffle=False,
                           verbose=0)  # the pipeline shuffles, seeded
        if callback.cancelled:
            raise JobCancelled("cancelled while training")
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        done += epochs

    test = make_pipeline(arrays["test"], splits["test"].labels, params.batch_size)
    metrics = {"test": evaluate(model, test, splits["test"].labels, dataset.classes)}
    return TrainingResult(
        model=model, history=history, metrics=metrics,
        split=split_summary(splits, dataset.classes, seed),
        sample_inputs=next(iter(test))[0].numpy()[:4],
        phases=[{"phase": p, "learning_rate": lr, "epochs": e} for p, lr, e in phases],
    )
