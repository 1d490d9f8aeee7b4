"""Two-phase transfer learning of the VGG16 classifier on a discovered dataset: fitting only
(``worker.evaluation.assessment`` scores and calibrates what this fits)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from shared.datasets import Dataset
from shared.errors import JobCancelled, TrainingDiverged
from shared.manifest import Phase, SplitRecord
from shared.ml.modeling import ModelConfig, build_model, load_model, set_phase
from shared.training_params import TrainingParams
from worker.context import JobContext, Reporter
from worker.data.pipeline import Split, augmentation, split_summary
from worker.data.prepared import Prepared, prepare_data
from worker.training import checkpoints, head_cache
from worker.training.callbacks import (
    cosine_schedule_callback,
    divergence_callback,
    epoch_logs_callback,
    progress_callback,
    time_budget_callback,
)
from worker.training.devices import TrainingDevices

log = logging.getLogger(__name__)


@dataclass
class Trained:
    """A fitted classifier in float32 (as it is assessed and published), the data it was
    fitted on, and what the fitting recorded."""

    model: Any
    data: Prepared
    history: dict[str, list[float]]
    phases: list[Phase]
    split: SplitRecord


@dataclass(frozen=True)
class Fitting:
    """What every phase of one fitting shares."""

    data: Prepared
    params: TrainingParams
    context: JobContext
    devices: TrainingDevices
    class_weights: dict[int, float] | None
    seed: int
    started: float  # time.monotonic() as the first phase began

    def over_budget(self) -> bool:
        budget = self.params.time_budget_s
        return budget is not None and time.monotonic() - self.started > budget


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, 1.0 on average over the training images."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def _callbacks(reporter: Reporter, params: TrainingParams, phase: str,
               started: float) -> list[Any]:
    import keras

    callbacks = [progress_callback(reporter, params.total_epochs, phase)]
    if params.time_budget_s:
        callbacks.insert(0, time_budget_callback(started, params.time_budget_s))
    if params.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.early_stopping_patience,
            restore_best_weights=True))
    return callbacks


def plan_phases(params: TrainingParams) -> list[tuple[str, float, int]]:
    """(phase, learning rate, epochs). A random base is trained whole: freezing it would
    leave a classifier on random features; a fine-tune of a version is one phase on a
    network that already classifies."""
    if params.base_version is not None:
        return [("site", params.learning_rate, params.epochs)]
    if params.base_weights == "none":
        return [("full", params.learning_rate, params.epochs)]
    phases = [("head", params.learning_rate, params.epochs)]
    if params.fine_tune:
        phases.append(("fine_tune", params.fine_tune_learning_rate, params.fine_tune_epochs))
    return phases


def _phase_inputs(model: Any, fit: Fitting, phase: str) -> tuple[Any, Any, Any]:
    """What one phase fits: the whole classifier on live batches, or (phase one with
    head_cache_views) its head on features computed once."""
    data, params, seed = fit.data, fit.params, fit.seed
    val = data.pipeline("validation", params.batch_size)
    if phase == "head" and params.head_cache_views:
        views = [data.pipeline("train", params.batch_size,
                               augmentation(seed + 10 * view, params.intensity_augmentation)
                               if view else None)
                 for view in range(params.head_cache_views)]
        (x, y), (xv, yv) = head_cache.cached_features(model, views, val)
        with fit.devices.scope():  # a Keras model trains under the strategy it was created in
            head = head_cache.head_model(model)
        return (head, head_cache.batches(x, y, data.batch("train", params.batch_size), seed),
                head_cache.batches(xv, yv, data.batch("validation", params.batch_size), None))
    train = data.pipeline("train", params.batch_size,
                          augmentation(seed, params.intensity_augmentation), seed)
    return model, train, val


def _fit_phase(model: Any, fit: Fitting, progress: checkpoints.Progress, phase: str,
               learning_rate: float, epochs: int) -> None:
    """Compile and fit one phase; raises when its loss diverged or the job was cancelled."""
    import keras

    params, devices = fit.params, fit.devices
    fitted, train, fit_val = _phase_inputs(model, fit, phase)
    with devices.scope():
        fitted.compile(optimizer=keras.optimizers.Adam(learning_rate),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                       jit_compile=devices.jit_compile)
    devices.build_for_fit(fitted, train)
    start = len(progress.history.get("loss", []))
    divergence = divergence_callback()
    callbacks = [divergence,
                 epoch_logs_callback(fitted, fit_val, fit.data.labels("validation"), fit.started),
                 checkpoints.epoch_callback(fit.context.checkpoint_dir, progress, model),
                 *_callbacks(fit.context.reporter, params, phase, fit.started)]
    if params.lr_schedule == "cosine":
        steps = -(-len(fit.data.labels("train")) // fit.data.batch("train", params.batch_size))
        callbacks.insert(0, cosine_schedule_callback(
            learning_rate, epochs, steps, fit.started, params.time_budget_s,
            params.warmup_fraction, first_epoch=start - progress.phase_epochs_done))
    with devices.scope():  # as keras-io's guide does: fit may create variables too
        fitted.fit(train, validation_data=fit_val, initial_epoch=start,
                   epochs=start + epochs - progress.phase_epochs_done, callbacks=callbacks,
                   class_weight=fit.class_weights, shuffle=False,
                   verbose=0)  # the pipeline shuffles
    if divergence.diverged_at is not None:
        epoch, batch = divergence.diverged_at
        raise TrainingDiverged(
            f"the training loss became non-finite in epoch {epoch}, batch {batch} of the "
            f"{phase} phase (learning rate {learning_rate:g}): try a lower learning_rate")
    if any(getattr(callback, "cancelled", False) for callback in callbacks):
        raise JobCancelled("cancelled while training")


def _fit_phases(model: Any, fit: Fitting, progress: checkpoints.Progress) -> None:
    """Every planned phase not finished before a resume, each checkpointed when it ends."""
    checkpoint_dir = fit.context.checkpoint_dir
    for index, (phase, learning_rate, epochs) in enumerate(plan_phases(fit.params)):
        if index < progress.phase:
            continue  # finished before a resume
        if fit.over_budget():
            break
        set_phase(model, phase)  # recompiled in _fit_phase: trainable changes need it
        _fit_phase(model, fit, progress, phase, learning_rate, epochs)
        progress.phases_done.append({"phase": phase, "learning_rate": learning_rate,
                                     "epochs": epochs, "epochs_run": progress.phase_epochs_done,
                                     "cached_views": fit.params.head_cache_views
                                     if phase == "head" else 0})
        progress.phase, progress.phase_epochs_done = index + 1, 0
        if checkpoint_dir is not None:
            checkpoints.save(checkpoint_dir, model, progress)


def _resume(model: Any, key: str, checkpoint_dir: Path | None) -> checkpoints.Progress:
    if checkpoint_dir is not None and (saved := checkpoints.load(checkpoint_dir, key)):
        log.info("resuming after %d epochs from %s", len(saved.history.get("loss", [])),
                 checkpoint_dir)
        checkpoints.restore_weights(checkpoint_dir, model)
        return saved
    return checkpoints.Progress(key=key)


@dataclass(frozen=True)
class Start:
    """Where a fitting starts: the base weights file, or a published version's model and
    its training split (whose images a fine-tune replays)."""

    weights: Path | None = None
    model_path: Path | None = None
    replay: Split | None = None
    replay_source: str = "parent"


def train_model(dataset: Dataset, params: TrainingParams, start: Start,
                context: JobContext, devices: TrainingDevices) -> Trained:
    """Split and load the dataset, then fit (resuming from a checkpoint of the same
    request)."""
    import keras

    if params.seed is None:
        raise ValueError("train a seeded request (TrainingParams.seeded)")
    devices.configure()
    keras.utils.set_random_seed(params.seed)  # Python, NumPy and TensorFlow
    data = prepare_data(dataset, params, params.seed, context.max_pixels, devices.replicas,
                        start.replay, start.replay_source)
    config = ModelConfig(len(dataset.classes), params.image_size, params.dropout,
                         start.weights)
    with devices.scope():
        model = build_model(config)
        if start.model_path is not None:  # the parent's whole network, head included
            model.set_weights(load_model(start.model_path).get_weights())
    loss_weights = (class_weights(data.labels("train"), len(dataset.classes))
                    if params.class_weights else None)
    progress = _resume(model, checkpoints.request_key(params.model_dump(),
                                                      dataset.fingerprint()),
                       context.checkpoint_dir)
    fit = Fitting(data, params, context, devices, loss_weights, params.seed, time.monotonic())
    _fit_phases(model, fit, progress)
    model = float32_copy(model, config, devices)  # what is assessed is what is published
    phases = [Phase(**phase, devices=devices.describe()) for phase in progress.phases_done]
    split = split_summary(data.splits, dataset.classes, params.seed, data.details,
                          loss_weights)
    return Trained(model, data, progress.history, phases, split)


def float32_copy(model: Any, config: ModelConfig, devices: TrainingDevices) -> Any:
    """The trained classifier in float32, as it is published and served. Mixed precision is
    how it was trained (its variables are float32 throughout); kept in it, the published
    model would compute in float16 on the API's CPUs, slower there, and its ONNX export would
    miss its check (bench/results/findings.md)."""
    import keras

    policy = keras.mixed_precision.global_policy()
    if policy.name == "float32":
        return model
    keras.mixed_precision.set_global_policy("float32")
    try:
        with devices.scope():
            copy = build_model(replace(config, weights_path=None))
    finally:
        keras.mixed_precision.set_global_policy(policy)  # the devices' record of training
    copy.set_weights(model.get_weights())
    return copy
