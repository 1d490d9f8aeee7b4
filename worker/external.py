"""Evaluating a published version on any labelled folder, e.g. another hospital's images."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from shared.datasets import Dataset, match_classes
from shared.inference import LoadedModel, choose_runtime, load_version
from shared.preprocessing import decode_image
from shared.registry import Registry
from shared.schemas import TrainingParams
from worker.abstention import reliable_subset
from worker.evaluation import summarize
from worker.training import TrainingResult

BATCH = 32


def evaluate_external(registry: Registry, version: str, dataset: Dataset, dataset_name: str,
                      max_pixels: int) -> dict[str, Any]:
    """The version's calibrated predictions on every image of ``dataset``, summarized."""
    return evaluate_loaded(load_version(registry, version), dataset, dataset_name, max_pixels)


def unpublished(result: TrainingResult, params: TrainingParams,
                classes: list[str]) -> LoadedModel:
    """A trained model, before it is published, as the API would serve it (TensorFlow)."""
    model = LoadedModel(version="unpublished", classes=classes, image_size=params.image_size,
                        model=result.model, temperature=result.temperature,
                        options=params.preprocess_options, shift=result.shift,
                        gate=result.gate, reliability=result.reliability)
    choose_runtime(model, None, "tensorflow")
    return model


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of an external report that a manifest and its card carry."""
    metrics, shift = report["metrics"], report.get("distribution_shift") or {}
    reliability, gate = report.get("reliability") or {}, report.get("chest_xray_gate") or {}
    return {"images": metrics["images"], "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"], "roc_auc": metrics["roc_auc"],
            "sensitivity": report["sensitivity"], "gate_refused": gate.get("refused"),
            "shift_flagged": shift.get("flagged"), "shift_auroc": shift.get("auroc_vs_test"),
            "reliable_share": reliability.get("coverage"),
            "reliable_balanced_accuracy": reliability.get("balanced_accuracy"),
            "risk_coverage": reliability.get("risk_coverage")}


def evaluate_loaded(model: LoadedModel, dataset: Dataset, dataset_name: str,
                    max_pixels: int) -> dict[str, Any]:
    """``evaluate_external`` on a loaded (or not yet published) model."""
    version = model.version
    mapping = match_classes(dataset.classes, model.classes)
    paths = [(path, mapping[label]) for label, files in dataset.files.items() for path in files]
    probabilities, scores, refused = [], [], []
    for start in range(0, len(paths), BATCH):
        # "warn": every image is scored, and the gate's verdict is counted beside it
        screened = [model.screen(decode_image(p.read_bytes(), max_pixels), "warn")
                    for p, _ in paths[start:start + BATCH]]
        refused += [check is not None and not check.passed for _, check in screened]
        result = model.infer(np.stack([pixels for pixels, _ in screened]))
        probabilities.append(result.probabilities)
        if result.shift_scores is not None:
            scores.append(result.shift_scores)
    labels = np.array([y for _, y in paths], dtype=np.int64)
    all_probabilities = np.concatenate(probabilities)
    shift = _shift_breakdown(model, labels, all_probabilities, scores)
    metrics = summarize(labels, all_probabilities, model.classes)
    present = sorted(set(mapping.values()))
    return {
        "kind": "external",
        "version": version,
        "evaluated_at": datetime.now(UTC).isoformat(),
        "dataset": {"name": dataset_name, "fingerprint": dataset.fingerprint(),
                    "layout": dataset.layout,
                    "counts": {label: len(files) for label, files in dataset.files.items()},
                    "class_mapping": {label: model.classes[i] for label, i in mapping.items()}},
        "metrics": metrics,
        # With one class (e.g. COVID films only) accuracy is its sensitivity; there are no
        # negatives for a specificity or an AUROC.
        "sensitivity": {model.classes[i]: metrics["per_class"][model.classes[i]]["sensitivity"]
                        for i in present},
        "chest_xray_gate": None if model.gate is None else {
            "refused": int(sum(refused)), "images": len(refused)},
        "distribution_shift": shift,
        "reliability": None if model.reliability is None else reliable_subset(
            labels, all_probabilities,
            np.concatenate(scores) > model.shift.threshold if shift and model.shift else None,
            model.reliability).model_dump(),
    }


def _shift_breakdown(model: LoadedModel, labels: np.ndarray, probabilities: np.ndarray,
                     scores: list[np.ndarray]) -> dict[str, Any] | None:
    """How many images the shift score flags, and the metrics on each side apart."""
    if model.shift is None or not scores:
        return None
    flagged = np.concatenate(scores) > model.shift.threshold
    parts = {name: summarize(labels[mask], probabilities[mask], model.classes)
             for name, mask in (("flagged", flagged), ("unflagged", ~flagged)) if mask.any()}
    report = {"threshold": model.shift.threshold, "flagged": int(flagged.sum()),
              "images": int(len(flagged)), "metrics": parts}
    internal = model.shift.test_scores
    if internal is not None and len(internal):
        from sklearn.metrics import roc_auc_score

        all_scores = np.concatenate(scores)
        report["auroc_vs_test"] = float(roc_auc_score(
            np.r_[np.zeros(len(internal)), np.ones(len(all_scores))],
            np.r_[internal, all_scores]))
    return report
