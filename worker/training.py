"""Two-phase transfer learning of the VGG16 classifier on a discovered dataset."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared.calibration import apply_temperature
from shared.datasets import Dataset
from shared.errors import InvalidDataset, JobCancelled
from shared.modeling import ModelConfig, build_model, set_phase
from shared.schemas import EpochMetrics, JobProgress, TrainingParams
from worker import checkpoints
from worker.datasets import (
    Split,
    augmentation,
    load_split_pixels,
    make_pipeline,
    split_dataset,
    split_summary,
)
from worker.evaluation import expected_calibration_error, fit_temperature, summarize

log = logging.getLogger(__name__)


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
    test: Split
    test_probabilities: np.ndarray  # uncalibrated, for the reliability diagram
    temperature: float
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


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, 1.0 on average over the training images."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def limit_threads(threads: int | None) -> None:
    """Cap TensorFlow's intra-op threads; only possible before TensorFlow starts working."""
    if threads is None:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        log.warning("TensorFlow already initialised: CXR_WORKER_THREADS=%s not applied", threads)


def _callbacks(reporter: Reporter, params: TrainingParams, phase: str) -> list[Any]:
    import keras

    callbacks = [_progress_callback(reporter, params.total_epochs, phase)]
    if params.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.early_stopping_patience,
            restore_best_weights=True))
    return callbacks


def plan_phases(params: TrainingParams) -> list[tuple[str, float, int]]:
    """(phase, learning rate, epochs). A random base is trained whole: freezing it would
    leave a classifier on random features."""
    if params.base_weights == "none":
        return [("full", params.learning_rate, params.epochs)]
    phases = [("head", params.learning_rate, params.epochs)]
    if params.fine_tune:
        phases.append(("fine_tune", params.fine_tune_learning_rate, params.fine_tune_epochs))
    return phases


def _fit_phases(model: Any, train: Any, val: Any, params: TrainingParams, reporter: Reporter,
                weights: dict[int, float] | None, progress: checkpoints.Progress,
                checkpoint_dir: Path | None) -> None:
    import keras

    for index, (phase, learning_rate, epochs) in enumerate(plan_phases(params)):
        if index < progress.phase:
            continue  # finished before a resume
        set_phase(model, phase)  # recompiled below: trainable changes need it
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        callbacks = [checkpoints.epoch_callback(checkpoint_dir, progress),
                     *_callbacks(reporter, params, phase)]
        start = len(progress.history.get("loss", []))
        model.fit(train, validation_data=val, initial_epoch=start,
                  epochs=start + epochs - progress.phase_epochs_done, callbacks=callbacks,
                  class_weight=weights, shuffle=False, verbose=0)  # the pipeline shuffles
        if callbacks[1].cancelled:
            raise JobCancelled("cancelled while training")
        progress.phases_done.append({"phase": phase, "learning_rate": learning_rate,
                                     "epochs": epochs,
                                     "epochs_run": progress.phase_epochs_done})
        progress.phase, progress.phase_epochs_done = index + 1, 0
        if checkpoint_dir is not None:
            checkpoints.save(checkpoint_dir, model, progress)


def train_model(dataset: Dataset, params: TrainingParams, weights: Path | None,
                reporter: Reporter, max_pixels: int, threads: int | None = None,
                checkpoint_dir: Path | None = None) -> TrainingResult:
    """Split, load, train (resuming from a checkpoint of the same request), evaluate."""
    import keras

    limit_threads(threads)
    seed = params.seed if params.seed is not None else 0
    keras.utils.set_random_seed(seed)
    groups_csv = dataset.root / params.groups_csv if params.groups_csv else None
    if groups_csv is not None and not groups_csv.is_file():
        raise InvalidDataset(f"groups_csv {params.groups_csv!r} is not in the dataset folder")
    try:
        splits, details = split_dataset(dataset, params.validation_fraction,
                                        params.test_fraction, seed, groups_csv,
                                        params.group_column)
    except ValueError as exc:
        raise InvalidDataset(str(exc)) from exc
    arrays = {name: load_split_pixels(split, params.image_size, max_pixels)
              for name, split in splits.items()}
    train = make_pipeline(arrays["train"], splits["train"].labels, params.batch_size,
                          augment=augmentation(seed), shuffle_seed=seed)
    val = make_pipeline(arrays["validation"], splits["validation"].labels, params.batch_size)
    model = build_model(ModelConfig(len(dataset.classes), params.image_size, params.dropout,
                                    weights))
    loss_weights = (class_weights(splits["train"].labels, len(dataset.classes))
                    if params.class_weights else None)
    key = checkpoints.request_key(params.model_dump(), dataset.fingerprint())
    progress = checkpoints.Progress(key=key)
    if checkpoint_dir is not None and (saved := checkpoints.load(checkpoint_dir, key)):
        log.info("resuming after %d epochs from %s", len(saved.history.get("loss", [])),
                 checkpoint_dir)
        checkpoints.restore_weights(checkpoint_dir, model)
        progress = saved
    _fit_phases(model, train, val, params, reporter, loss_weights, progress, checkpoint_dir)
    history, phases = progress.history, progress.phases_done

    test = make_pipeline(arrays["test"], splits["test"].labels, params.batch_size)
    temperature = fit_temperature(splits["validation"].labels,
                                  np.asarray(model.predict(val, verbose=0)))
    raw = np.asarray(model.predict(test, verbose=0))
    summary = split_summary(splits, dataset.classes, seed) | details
    summary["class_weights"] = loss_weights
    return TrainingResult(
        model=model, history=history, split=summary, test=splits["test"],
        metrics={"test": test_report(splits["test"].labels, raw, temperature, dataset.classes)},
        test_probabilities=raw, temperature=temperature,
        sample_inputs=next(iter(test))[0].numpy()[:4], phases=phases,
    )


def test_report(labels: np.ndarray, raw: np.ndarray, temperature: float,
                classes: list[str]) -> dict[str, Any]:
    """Metrics of the calibrated probabilities (what /predict returns), ECE before and after."""
    report = summarize(labels, apply_temperature(raw, temperature), classes)
    report["ece_uncalibrated"] = expected_calibration_error(labels, raw) if len(labels) else None
    return report
