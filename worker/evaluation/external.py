"""Evaluating a published version on any labelled folder, e.g. another hospital's images."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shared.datasets import Dataset, match_classes
from shared.errors import CxrError
from shared.lineage import comparable_classes
from shared.loading import load_version
from shared.manifest import EvaluatedDataset, ExternalReport, GateCount, ShiftBreakdown
from shared.ml.screening import ImageLimits
from shared.ml.served import SCORE_BATCH, ServedVersion, serve_model
from shared.paired import paired_comparison
from shared.registry import Registry
from shared.schemas import Prediction
from shared.training_params import TrainingParams
from worker.context import PhaseReporter, Steps
from worker.evaluation.abstention import balanced_accuracy_interval, reliable_subset
from worker.evaluation.assessment import Assessment
from worker.evaluation.scores import summarize


def evaluate_external(registry: Registry, version: str, dataset: Dataset, dataset_name: str,
                      max_pixels: int, reporter: PhaseReporter | None = None,
                      compare: str | None = None) -> ExternalReport:
    """The version's calibrated predictions on every image of ``dataset``, summarized; with
    ``compare``, that version too, on the same images, paired with it."""
    # Classes the version lacks fail before the version is loaded (seconds, and memory).
    classes = list(registry.manifest(version).classes)
    match_classes(dataset.classes, classes, dataset_name)
    if compare is not None:
        comparable_classes(registry.manifest(compare), classes)
    report, answers = _evaluated(load_version(registry, version), dataset, dataset_name,
                                 max_pixels, reporter)
    if compare is None:
        return report
    other = load_version(registry, compare)
    labels, paths = _labelled(dataset, other.classes, dataset_name)
    theirs = _answer_all(other, paths, max_pixels,
                         Steps(reporter, f"{compare} on {dataset_name}", len(paths)))
    comparison = paired_comparison(labels, answers.probabilities.argmax(axis=1),
                                   theirs.probabilities.argmax(axis=1), (version, compare))
    return report.model_copy(update={"comparison": comparison})


def unpublished(model: Any, assessment: Assessment, params: TrainingParams,
                classes: list[str]) -> ServedVersion:
    """A trained model, before it is published, as the API would serve it (TensorFlow)."""
    return serve_model("unpublished", classes, params.image_size, model,
                       temperature=assessment.temperature, options=params.preprocess_options,
                       shift=assessment.shift, gate=assessment.gate,
                       reliability=assessment.reliability)


@dataclass
class Answers:
    """A set's answers as arrays: calibrated probabilities, shift scores (when the version
    scores shift) and whether the chest-radiograph gate refused each image."""

    probabilities: np.ndarray
    shift_scores: np.ndarray | None
    refused: np.ndarray


def _answer_all(model: ServedVersion, paths: list[Path], max_pixels: int,
                steps: Steps) -> Answers:
    """Every image answered as the API would, its gate's verdict counted rather than acted
    on ("warn"); an image that fails fails the evaluation with its error. A cancelled job
    stops between two chunks (``Steps.advance`` raises JobCancelled)."""
    limits = ImageLimits(max_pixels=max_pixels, gate="warn")
    answers: list[Prediction] = []
    for start in range(0, len(paths), SCORE_BATCH):  # each chunk reported as it is done
        for answer in model.answer_images(paths[start:start + SCORE_BATCH], limits):
            if isinstance(answer, CxrError):
                raise answer
            answers.append(answer)
        steps.advance(len(paths[start:start + SCORE_BATCH]))
    shifts = [a.distribution_shift.score for a in answers if a.distribution_shift]
    return Answers(
        np.array([[a.probabilities[c] for c in model.classes] for a in answers],
                 dtype=np.float64).reshape(len(answers), len(model.classes)),
        np.array(shifts) if model.shift is not None and len(shifts) == len(answers) else None,
        np.array([a.chest_xray is not None and not a.chest_xray.passed for a in answers]))


def _labelled(dataset: Dataset, classes: list[str],
              dataset_name: str) -> tuple[np.ndarray, list[Path]]:
    """Every image of the set, in one order, and its label as the index of a class."""
    mapping = match_classes(dataset.classes, classes, dataset_name)
    pairs = [(path, mapping[label]) for label, files in dataset.files.items() for path in files]
    return np.array([y for _, y in pairs], dtype=np.int64), [path for path, _ in pairs]


def evaluate_loaded(model: ServedVersion, dataset: Dataset, dataset_name: str,
                    max_pixels: int, reporter: PhaseReporter | None = None) -> ExternalReport:
    """``evaluate_external`` on a loaded (or not yet published) model; the images scored are
    reported as the phase "evaluation on <dataset_name>"."""
    return _evaluated(model, dataset, dataset_name, max_pixels, reporter)[0]


def _evaluated(model: ServedVersion, dataset: Dataset, dataset_name: str, max_pixels: int,
               reporter: PhaseReporter | None) -> tuple[ExternalReport, Answers]:
    mapping = match_classes(dataset.classes, model.classes, dataset_name)
    labels, paths = _labelled(dataset, model.classes, dataset_name)
    steps = Steps(reporter, f"evaluation on {dataset_name}", len(paths))
    answers = _answer_all(model, paths, max_pixels, steps)
    probabilities = answers.probabilities
    shift = _shift_breakdown(model, labels, probabilities, answers.shift_scores)
    metrics = summarize(labels, probabilities, model.classes)
    # the test split's interval comes from the reliability record; another set needs its own
    metrics = metrics.model_copy(update={"balanced_accuracy_ci": balanced_accuracy_interval(
        labels, probabilities.argmax(axis=1))})
    present = sorted(set(mapping.values()))
    report = ExternalReport(
        version=model.version, evaluated_at=datetime.now(UTC),
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
            refused=int(answers.refused.sum()), images=len(answers.refused)),
        distribution_shift=shift,
        reliability=None if model.reliability is None else reliable_subset(
            labels, probabilities,
            answers.shift_scores > model.shift.threshold
            if shift and model.shift and answers.shift_scores is not None else None,
            model.reliability, model.classes),
    )
    return report, answers


def _shift_breakdown(model: ServedVersion, labels: np.ndarray, probabilities: np.ndarray,
                     scores: np.ndarray | None) -> ShiftBreakdown | None:
    """How many images the shift score flags, and the metrics on each side apart."""
    if model.shift is None or scores is None or not len(scores):
        return None
    flagged = scores > model.shift.threshold
    parts = {name: summarize(labels[mask], probabilities[mask], model.classes)
             for name, mask in (("flagged", flagged), ("unflagged", ~flagged)) if mask.any()}
    auroc = None
    internal = model.shift.test_scores
    if internal is not None and len(internal):
        from sklearn.metrics import roc_auc_score

        auroc = float(roc_auc_score(np.r_[np.zeros(len(internal)), np.ones(len(scores))],
                                    np.r_[internal, scores]))
    return ShiftBreakdown(threshold=model.shift.threshold, flagged=int(flagged.sum()),
                          images=int(len(flagged)), metrics=parts, auroc_vs_test=auroc)
