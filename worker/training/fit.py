"""Two-phase transfer learning of the VGG16 classifier on a discovered dataset."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from shared.datasets import Dataset
from shared.errors import InvalidDataset, JobCancelled, TrainingDiverged
from shared.manifest import ClassRates, Metrics, Phase, SourceMetrics, SplitMetrics, SplitRecord
from shared.ml.calibration import apply_temperature
from shared.ml.chest_gate import ChestGate
from shared.ml.modeling import OUTPUT_LAYER, ModelConfig, build_model, set_phase
from shared.ml.reliability import ReliabilityRecord
from shared.ml.shift import ShiftReference, block_slices, feature_model, input_features
from shared.training_params import TrainingParams
from worker.context import JobContext, Reporter, Steps
from worker.data.pipeline import (
    Split,
    augmentation,
    load_split_pixels,
    make_pipeline,
    split_dataset,
    split_summary,
)
from worker.evaluation.abstention import fit_reliability
from worker.evaluation.gate_fitting import fit_gate
from worker.evaluation.scores import expected_calibration_error, fit_temperature, summarize
from worker.evaluation.shift_fitting import features_and_probabilities, fit_reference
from worker.training import checkpoints, head_cache
from worker.training.callbacks import (
    cosine_schedule_callback,
    divergence_callback,
    epoch_logs_callback,
    progress_callback,
    time_budget_callback,
)
from worker.training.devices import Runtime, replica_batch

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    model: Any
    history: dict[str, list[float]]
    metrics: Metrics
    split: SplitRecord
    test: Split
    test_probabilities: np.ndarray  # uncalibrated, for the reliability diagram
    temperature: float
    shift: ShiftReference
    gate: ChestGate | None  # None: too few training images to fit one
    reliability: ReliabilityRecord
    sample_inputs: np.ndarray
    # Each split's prepared pixels and labels: the INT8 copy is calibrated on training images
    # and checked on the test split.
    pixels: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    phases: list[Phase] = field(default_factory=list)


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
    leave a classifier on random features."""
    if params.base_weights == "none":
        return [("full", params.learning_rate, params.epochs)]
    phases = [("head", params.learning_rate, params.epochs)]
    if params.fine_tune:
        phases.append(("fine_tune", params.fine_tune_learning_rate, params.fine_tune_epochs))
    return phases


def _phase_inputs(model: Any, data: Prepared, params: TrainingParams, phase: str,
                  seed: int, runtime: Runtime) -> tuple[Any, Any, Any]:
    """What one phase fits: the whole classifier on live batches, or (phase one with
    head_cache_views) its head on features computed once."""
    val = data.pipeline("validation", params.batch_size)
    if phase == "head" and params.head_cache_views:
        views = [data.pipeline("train", params.batch_size,
                               augmentation(seed + 10 * view, params.intensity_augmentation)
                               if view else None)
                 for view in range(params.head_cache_views)]
        (x, y), (xv, yv) = head_cache.cached_features(model, views, val)
        with runtime.scope():  # a Keras model trains under the strategy it was created in
            head = head_cache.head_model(model)
        return (head, head_cache.batches(x, y, data.batch("train", params.batch_size), seed),
                head_cache.batches(xv, yv, data.batch("validation", params.batch_size), None))
    train = data.pipeline("train", params.batch_size,
                          augmentation(seed, params.intensity_augmentation), seed)
    return model, train, val


def _fit_phases(model: Any, data: Prepared, params: TrainingParams, reporter: Reporter,
                weights: dict[int, float] | None, progress: checkpoints.Progress,
                checkpoint_dir: Path | None, runtime: Runtime, seed: int) -> None:
    import keras

    started = time.monotonic()
    val_labels = data.labels("validation")
    for index, (phase, learning_rate, epochs) in enumerate(plan_phases(params)):
        if index < progress.phase:
            continue  # finished before a resume
        if params.time_budget_s and time.monotonic() - started > params.time_budget_s:
            break
        set_phase(model, phase)  # recompiled below: trainable changes need it
        fitted, train, fit_val = _phase_inputs(model, data, params, phase, seed, runtime)
        with runtime.scope():
            fitted.compile(optimizer=keras.optimizers.Adam(learning_rate),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                           jit_compile=runtime.jit_compile)
        runtime.build_for_fit(fitted, train)
        start = len(progress.history.get("loss", []))
        divergence = divergence_callback()
        callbacks = [divergence, epoch_logs_callback(fitted, fit_val, val_labels, started),
                     checkpoints.epoch_callback(checkpoint_dir, progress, model),
                     *_callbacks(reporter, params, phase, started)]
        if params.lr_schedule == "cosine":
            steps = -(-len(data.labels("train")) // data.batch("train", params.batch_size))
            callbacks.insert(0, cosine_schedule_callback(
                learning_rate, epochs, steps, started, params.time_budget_s,
                params.warmup_fraction, first_epoch=start - progress.phase_epochs_done))
        with runtime.scope():  # as keras-io's guide does: fit may create variables too
            fitted.fit(train, validation_data=fit_val, initial_epoch=start,
                       epochs=start + epochs - progress.phase_epochs_done, callbacks=callbacks,
                       class_weight=weights, shuffle=False, verbose=0)  # the pipeline shuffles
        if divergence.diverged_at is not None:
            epoch, batch = divergence.diverged_at
            raise TrainingDiverged(
                f"the training loss became non-finite in epoch {epoch}, batch {batch} of the "
                f"{phase} phase (learning rate {learning_rate:g}): try a lower learning_rate")
        if any(getattr(callback, "cancelled", False) for callback in callbacks):
            raise JobCancelled("cancelled while training")
        progress.phases_done.append({"phase": phase, "learning_rate": learning_rate,
                                     "epochs": epochs, "epochs_run": progress.phase_epochs_done,
                                     "cached_views": params.head_cache_views
                                     if phase == "head" else 0})
        progress.phase, progress.phase_epochs_done = index + 1, 0
        if checkpoint_dir is not None:
            checkpoints.save(checkpoint_dir, model, progress)


@dataclass
class Prepared:
    """The split, its decoded pixels and the pipelines built on them."""

    splits: dict[str, Split]
    details: dict[str, Any]
    arrays: dict[str, np.ndarray]
    replicas: int = 1  # batches are global: split across the strategy's replicas

    def labels(self, name: str) -> np.ndarray:
        return self.splits[name].labels

    def batch(self, name: str, batch_size: int) -> int:
        return replica_batch(batch_size, len(self.labels(name)), self.replicas)

    def pipeline(self, name: str, batch_size: int, augment: Any = None,
                 seed: int | None = None) -> Any:
        return make_pipeline(self.arrays[name], self.splits[name].labels,
                             self.batch(name, batch_size), augment=augment, shuffle_seed=seed)


def prepare_data(dataset: Dataset, params: TrainingParams, seed: int,
                 max_pixels: int, replicas: int = 1) -> Prepared:
    """Split (grouped by near-duplicates and, optionally, patients) and decode."""
    groups_csv = dataset.root / params.groups_csv if params.groups_csv else None
    if groups_csv is not None and not groups_csv.is_file():
        raise InvalidDataset(f"groups_csv {params.groups_csv!r} is not in the dataset folder")
    try:
        splits, details = split_dataset(dataset, params.validation_fraction,
                                        params.test_fraction, seed, groups_csv,
                                        params.group_column, params.group_by_source,
                                        params.holdout_source)
    except ValueError as exc:
        raise InvalidDataset(str(exc)) from exc
    arrays = {name: load_split_pixels(split, params.image_size, max_pixels,
                                      params.preprocess_options)
              for name, split in splits.items()}
    return Prepared(splits, details, arrays, replicas)


def _resume(model: Any, key: str, checkpoint_dir: Path | None) -> checkpoints.Progress:
    if checkpoint_dir is not None and (saved := checkpoints.load(checkpoint_dir, key)):
        log.info("resuming after %d epochs from %s", len(saved.history.get("loss", [])),
                 checkpoint_dir)
        checkpoints.restore_weights(checkpoint_dir, model)
        return saved
    return checkpoints.Progress(key=key)


def train_model(dataset: Dataset, params: TrainingParams, weights: Path | None,
                context: JobContext, runtime: Runtime) -> TrainingResult:
    """Split, load, train (resuming from a checkpoint of the same request), evaluate."""
    import keras

    if params.seed is None:
        raise ValueError("train a seeded request (TrainingParams.seeded)")
    runtime.configure()
    seed, reporter, checkpoint_dir = params.seed, context.reporter, context.checkpoint_dir
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    data = prepare_data(dataset, params, seed, runtime.max_pixels, runtime.replicas)
    val = data.pipeline("validation", params.batch_size)
    config = ModelConfig(len(dataset.classes), params.image_size, params.dropout, weights)
    with runtime.scope():
        model = build_model(config)
    labels = {name: split.labels for name, split in data.splits.items()}
    loss_weights = (class_weights(labels["train"], len(dataset.classes))
                    if params.class_weights else None)
    progress = _resume(model, checkpoints.request_key(params.model_dump(),
                                                      dataset.fingerprint()), checkpoint_dir)
    _fit_phases(model, data, params, reporter, loss_weights, progress, checkpoint_dir, runtime,
                seed)
    model = float32_copy(model, config, runtime)  # what is evaluated is what is published

    test = data.pipeline("test", params.batch_size)
    # one pass per split gives both the shift features and the probabilities
    with runtime.scope():
        extractor = feature_model(model)
    passes = Steps(reporter, "evaluation", sum(len(split) for split in labels.values()))
    train_features, _ = features_and_probabilities(
        extractor, data.pipeline("train", params.batch_size), passes)
    val_features, val_raw = features_and_probabilities(extractor, val, passes)
    test_features, raw = features_and_probabilities(extractor, test, passes)
    # temperature, shift reference, reliability record, chest-radiograph gate
    calibration = Steps(reporter, "calibration", 4)
    temperature = fit_temperature(labels["validation"], val_raw)
    calibration.advance()
    test_metrics = test_report(labels["test"], raw, temperature, dataset.classes)
    calibrated_test = apply_temperature(raw, temperature)
    sources = data.splits["test"].sources
    test_by_source = (by_source(labels["test"], calibrated_test, sources, dataset.classes)
                      if sources else None)
    inputs = {name: input_features(data.arrays[name]) for name in ("train", "validation", "test")}
    reference = fit_reference(
        train_features, labels["train"], val_features, slices=block_slices(model),
        inputs=(inputs["train"], inputs["validation"]),
        dense=tuple(model.get_layer(OUTPUT_LAYER).get_weights()))
    test_scores = reference.scores(test_features, inputs["test"])
    reference = replace(reference, test_scores=test_scores)
    calibration.advance()
    flagged = test_scores > reference.threshold
    reliability = fit_reliability(
        apply_temperature(val_raw, temperature), labels["test"],
        calibrated_test, flagged, len(dataset.classes),
        params.confidence_coverage, seed)
    calibration.advance()
    metrics = Metrics(test=test_metrics.model_copy(update={
        "shift_flag_rate": float(flagged.mean()) if len(flagged) else None,
        "balanced_accuracy_ci": reliability.balanced_accuracy_ci}), test_by_source=test_by_source)
    gate = (fit_gate(list(data.arrays["train"][..., 0]),
                     list(data.arrays["validation"][..., 0]), seed)
            if len(labels["train"]) >= params.gate_min_images else None)
    calibration.advance()
    summary = split_summary(data.splits, dataset.classes, seed, data.details, loss_weights)
    phases = [Phase.model_validate(phase | {"runtime": runtime.describe()})
              for phase in progress.phases_done]
    return TrainingResult(
        model=model, history=progress.history, split=summary, test=data.splits["test"],
        metrics=metrics, test_probabilities=raw, temperature=temperature, shift=reference,
        gate=gate, reliability=reliability,
        sample_inputs=next(iter(test))[0].numpy()[:4], pixels=data.arrays, labels=labels,
        phases=phases,
    )


def by_source(labels: np.ndarray, probabilities: np.ndarray, sources: list[str],
              classes: list[str]) -> dict[str, SourceMetrics]:
    """Each source's images of a split scored apart: sensitivity and specificity per class."""
    found: dict[str, SourceMetrics] = {}
    for source in sorted(set(sources)):
        mask = np.array([s == source for s in sources])
        report = summarize(labels[mask], probabilities[mask], classes)
        found[source] = SourceMetrics(
            images=report.images, accuracy=report.accuracy,
            balanced_accuracy=report.balanced_accuracy,
            per_class={label: ClassRates(
                support=rates.support, sensitivity=rates.sensitivity,
                sensitivity_ci=rates.sensitivity_ci, specificity=rates.specificity,
                specificity_ci=rates.specificity_ci) for label, rates in report.per_class.items()})
    return found


def float32_copy(model: Any, config: ModelConfig, runtime: Runtime) -> Any:
    """The trained classifier in float32, as it is published and served. Mixed precision is
    how it was trained (its variables are float32 throughout); kept in it, the published
    model would compute in float16 on the API's CPUs (2x slower than float32 on this one)
    and its ONNX export would miss the 1e-4 check."""
    import keras

    policy = keras.mixed_precision.global_policy()
    if policy.name == "float32":
        return model
    keras.mixed_precision.set_global_policy("float32")
    try:
        with runtime.scope():
            copy = build_model(replace(config, weights_path=None))
    finally:
        keras.mixed_precision.set_global_policy(policy)  # the runtime's record of training
    copy.set_weights(model.get_weights())
    return copy


def test_report(labels: np.ndarray, raw: np.ndarray, temperature: float,
                classes: list[str]) -> SplitMetrics:
    """Metrics of the calibrated probabilities (what /predict returns), ECE before and after."""
    report = summarize(labels, apply_temperature(raw, temperature), classes)
    return report.model_copy(update={
        "ece_uncalibrated": expected_calibration_error(labels, raw) if len(labels) else None})
