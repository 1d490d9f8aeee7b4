"""Evaluating a published version on any labelled folder, e.g. another hospital's images."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from shared.datasets import Dataset, match_classes
from shared.loading import load_version
from shared.manifest import EvaluatedDataset, ExternalReport, GateCount, ShiftBreakdown
from shared.ml.served import ServedVersion, serve_model
from shared.registry import Registry
from shared.training_params import TrainingParams
from worker.context import PhaseReporter, Steps
from worker.evaluation.abstention import balanced_accuracy_interval, reliable_subset
from worker.evaluation.scores import summarize
from worker.training.fit import TrainingResult

BATCH = 32


def evaluate_external(registry: Registry, version: str, dataset: Dataset, dataset_name: str,
                      max_pixels: int, reporter: PhaseReporter | None = None) -> ExternalReport:
    """The version's calibrated predictions on every image of ``dataset``, summarized."""
    # Classes the version lacks fail before the version is loaded (seconds, and memory).
    match_classes(dataset.classes, list(registry.manifest(version).classes))
    return evaluate_loaded(load_version(registry, version), dataset, dataset_name, max_pixels,
                           reporter)


def unpublished(result: TrainingResult, params: TrainingParams,
                classes: list[str]) -> ServedVersion:
    """A trained model, before it is published, as the API would serve it (TensorFlow)."""
    return serve_model("unpublished", classes, params.image_size, result.model,
                       temperature=result.temperature, options=params.preprocess_options,
                       shift=result.shift, gate=result.gate, reliability=result.reliability)


def evaluate_loaded(model: ServedVersion, dataset: Dataset, dataset_name: str,
                    max_pixels: int, reporter: PhaseReporter | None = None) -> ExternalReport:
    """``evaluate_external`` on a loaded (or not yet published) model; the images scored are
    reported as the phase "evaluation on <dataset_name>"."""
    version = model.version
    mapping = match_classes(dataset.classes, model.classes)
    paths = [(path, mapping[label]) for label, files in dataset.files.items() for path in files]
    steps = Steps(reporter, f"evaluation on {dataset_name}", len(paths))
    probabilities, scores, refused = [], [], []
    for start in range(0, len(paths), BATCH):
        # "warn": every image is scored, and the gate's verdict is counted beside it
        screened = [model.screen(model.decode(p.read_bytes(), max_pixels), "warn")
                    for p, _ in paths[start:start + BATCH]]
        refused += [check is not None and not check.passed for _, check in screened]
        result = model.infer(np.stack([pixels for pixels, _ in screened]))
        probabilities.append(result.probabilities)
        if result.shift_scores is not None:
            scores.append(result.shift_scores)
        steps.advance(len(screened))
    labels = np.array([y for _, y in paths], dtype=np.int64)
    all_probabilities = np.concatenate(probabilities)
    shift = _shift_breakdown(model, labels, all_probabilities, scores)
    metrics = summarize(labels, all_probabilities, model.classes)
    # the test split's interval comes from the reliability record; another set needs its own
    metrics = metrics.model_copy(update={"balanced_accuracy_ci": balanced_accuracy_interval(
        labels, all_probabilities.argmax(axis=1))})
    present = sorted(set(mapping.values()))
    return ExternalReport(
        version=version, evaluated_at=datetime.now(UTC),
        dataset=EvaluatedDataset(
            name=dataset_name, fingerprint=dataset.fingerprint(), layout=dataset.layout,
            counts={label: len(files) for label, files in dataset.files.items()},
            class_mapping={label: model.classes[i] for label, i in mapping.items()}),
        metrics=metrics,
        # With one class (e.g. COVID films only) accuracy is its sensitivity; there are no
        # negatives for a specificity or an AUROC.
        sensitivity={model.classes[i]: metrics.per_class[model.classes[i]].sensitivity
                     for i in present},
        chest_xray_gate=None if model.gate is None else GateCount(
            refused=int(sum(refused)), images=len(refused)),
        distribution_shift=shift,
        reliability=None if model.reliability is None else reliable_subset(
            labels, all_probabilities,
            np.concatenate(scores) > model.shift.threshold if shift and model.shift else None,
            model.reliability),
    )


def _shift_breakdown(model: ServedVersion, labels: np.ndarray, probabilities: np.ndarray,
                     scores: list[np.ndarray]) -> ShiftBreakdown | None:
    """How many images the shift score flags, and the metrics on each side apart."""
    if model.shift is None or not scores:
        return None
    flagged = np.concatenate(scores) > model.shift.threshold
    parts = {name: summarize(labels[mask], probabilities[mask], model.classes)
             for name, mask in (("flagged", flagged), ("unflagged", ~flagged)) if mask.any()}
    auroc = None
    internal = model.shift.test_scores
    if internal is not None and len(internal):
        from sklearn.metrics import roc_auc_score

        all_scores = np.concatenate(scores)
        auroc = float(roc_auc_score(np.r_[np.zeros(len(internal)), np.ones(len(all_scores))],
                                    np.r_[internal, all_scores]))
    return ShiftBreakdown(threshold=model.shift.threshold, flagged=int(flagged.sum()),
                          images=int(len(flagged)), metrics=parts, auroc_vs_test=auroc)
