"""What a fitted classifier is judged and served with, computed on its own splits: the
temperature, the shift reference, the reliability record, the chest-radiograph gate and the
test metrics (per source too)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from shared.manifest import ClassRates, GateCount, Metrics, SourceMetrics, SplitMetrics
from shared.ml.calibration import apply_temperature
from shared.ml.chest_gate import ChestGate
from shared.ml.modeling import OUTPUT_LAYER
from shared.ml.reliability import ReliabilityRecord
from shared.ml.shift import ShiftReference, block_slices, feature_model, input_features
from shared.training_params import TrainingParams
from worker.context import PhaseReporter, Steps
from worker.data.prepared import Prepared
from worker.evaluation.abstention import fit_reliability
from worker.evaluation.gate_fitting import fit_gate, refusals
from worker.evaluation.scores import expected_calibration_error, fit_temperature, summarize
from worker.evaluation.shift_fitting import features_and_probabilities, fit_reference

Scope = Callable[[], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Assessment:
    """A classifier's figures on its splits and what serves beside it."""

    metrics: Metrics
    temperature: float
    shift: ShiftReference
    gate: ChestGate | None  # None: too few training images to fit one
    reliability: ReliabilityRecord
    # The test split's labels and uncalibrated probabilities: the reliability diagram's.
    test_labels: np.ndarray
    test_probabilities: np.ndarray
    gate_refusals: dict[str, GateCount] = field(default_factory=dict)  # per split


def _passes(model: Any, data: Prepared, batch_size: int, reporter: PhaseReporter | None,
            scope: Scope) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One pass per split gives both its shift features and its (uncalibrated)
    probabilities; every image is a step of the phase "evaluation"."""
    with scope():
        extractor = feature_model(model)
    steps = Steps(reporter, "evaluation", sum(len(split.labels) for split in data.splits.values()))
    return {name: features_and_probabilities(extractor, data.pipeline(name, batch_size), steps)
            for name in ("train", "validation", "test")}


def _shift_reference(model: Any, data: Prepared, passes: dict[str, tuple[np.ndarray, np.ndarray]]
                     ) -> tuple[ShiftReference, np.ndarray]:
    """Fitted on training, standardized on validation, with the test split's scores (also
    returned)."""
    inputs = {name: input_features(data.arrays[name]) for name in passes}
    reference = fit_reference(
        passes["train"][0], data.labels("train"), passes["validation"][0],
        slices=block_slices(model), inputs=(inputs["train"], inputs["validation"]),
        dense=tuple(model.get_layer(OUTPUT_LAYER).get_weights()))
    scores = reference.scores(passes["test"][0], inputs["test"])
    return replace(reference, test_scores=scores), scores


def assess(model: Any, data: Prepared, classes: list[str], params: TrainingParams,
           reporter: PhaseReporter | None = None, scope: Scope = nullcontext) -> Assessment:
    """Score ``model`` on its splits and fit what serves beside it; the four fits are the
    steps of the phase "calibration". ``scope``: where its feature model is made (the
    training devices' strategy)."""
    seed, labels = params.seed or 0, data.labels("test")
    passes = _passes(model, data, params.batch_size, reporter, scope)
    val_raw, raw = passes["validation"][1], passes["test"][1]
    calibration = Steps(reporter, "calibration", 4)
    temperature = fit_temperature(data.labels("validation"), val_raw)
    calibration.advance()
    calibrated = apply_temperature(raw, temperature)
    sources = data.splits["test"].sources
    reference, test_scores = _shift_reference(model, data, passes)
    calibration.advance()
    flagged = test_scores > reference.threshold
    reliability = fit_reliability(apply_temperature(val_raw, temperature), labels, calibrated,
                                  flagged, classes, params.confidence_coverage, seed)
    calibration.advance()
    test = test_report(labels, raw, temperature, classes).model_copy(update={
        "shift_flag_rate": float(flagged.mean()) if len(flagged) else None,
        "balanced_accuracy_ci": reliability.balanced_accuracy_ci})
    gate = (fit_gate(list(data.arrays["train"][..., 0]),
                     list(data.arrays["validation"][..., 0]), seed)
            if len(data.labels("train")) >= params.gate_min_images else None)
    refused = gate_refusals(gate, data) if gate is not None else {}
    calibration.advance()
    metrics = Metrics(test=test, test_by_source=by_source(labels, calibrated, sources, classes)
                      if sources else None)
    return Assessment(metrics, temperature, reference, gate, reliability, labels, raw, refused)


def gate_refusals(gate: ChestGate, data: Prepared) -> dict[str, GateCount]:
    """The radiographs of each of the version's splits that ``gate`` would refuse."""
    return refusals(gate, {name: arrays[..., 0] for name, arrays in data.arrays.items()})


def test_report(labels: np.ndarray, raw: np.ndarray, temperature: float,
                classes: list[str]) -> SplitMetrics:
    """Metrics of the calibrated probabilities (what /predict returns), ECE before and after."""
    report = summarize(labels, apply_temperature(raw, temperature), classes)
    return report.model_copy(update={
        "ece_uncalibrated": expected_calibration_error(labels, raw) if len(labels) else None})


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
