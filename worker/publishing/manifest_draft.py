"""What a version's manifest records of its training, assessment and promotion: everything
a user needs to judge and reproduce it, drafted before the registry seals it."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from shared.checksums import sha256_file
from shared.datasets import Dataset
from shared.manifest import (
    BaseWeightsRecord,
    Calibration,
    DatasetRecord,
    ExternalFigures,
    GateRecord,
    Lineage,
    ManifestDraft,
    Promotion,
    ShiftRecord,
    SplitMetrics,
    TrainingRecord,
)
from shared.ml.preprocessing import preprocessing_id
from shared.ml.shift import ShiftReference
from shared.training_params import TrainingParams
from worker.evaluation.assessment import Assessment
from worker.evaluation.scores import temperature_at_bound
from worker.publishing.publish import TrainedVersion

LIBRARIES = ("tensorflow", "keras", "numpy", "pillow", "celery")
SHIFT_METHOD = ("largest of detectors standardized on validation (median, IQR): Mahalanobis "
                "distances to the nearest class mean (Ledoit-Wolf) on block feature "
                "statistics and on the input's low-level features; logit energy")
GATE_METHOD = ("one-hidden-layer network over low-level image features, training radiographs "
               "and their variations of framing and exposure against generated "
               "non-radiographs; colour images refused")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _dataset(dataset: Dataset, params: TrainingParams) -> DatasetRecord:
    return DatasetRecord(name=params.dataset, fingerprint=dataset.fingerprint(),
                         layout=dataset.layout,
                         counts={k: len(v) for k, v in dataset.files.items()})


def _sources(dataset: Dataset, params: TrainingParams) -> dict[str, dict[str, int]] | None:
    """Images per class of each dataset trained on together."""
    if not dataset.sources:
        return None
    return {name: {label: sum(dataset.sources.get(p) == name for p in paths)
                   for label, paths in dataset.files.items()}
            for name in (params.dataset, *params.datasets)}


def _calibration(temperature: float, test: SplitMetrics | None) -> Calibration:
    return Calibration(temperature=temperature, at_bound=temperature_at_bound(temperature),
                       ece_before=test.ece_uncalibrated if test else None,
                       ece_after=test.ece if test else None)


def _shift(shift: ShiftReference, test: SplitMetrics | None) -> ShiftRecord:
    return ShiftRecord(
        method=SHIFT_METHOD,
        features="+".join([d.name for d in shift.detectors] + (["energy"] if shift.energy else [])),
        layout=shift.layout, fitted_on="train", threshold=shift.threshold,
        threshold_quantile_of_validation=shift.quantile,
        test_flag_rate=test.shift_flag_rate if test else None)


def _gate(assessment: Assessment, params: TrainingParams, train_images: int,
          lineage: Lineage | None) -> GateRecord:
    fitted = train_images >= params.gate_min_images
    if assessment.gate is None:
        return GateRecord(reason=f"not fitted: fewer than {params.gate_min_images} training "
                                 "images")
    fitted_on = "train" if fitted or lineage is None else f"the parent {lineage.parent}'s"
    return GateRecord(method=GATE_METHOD, fitted_on=fitted_on,
                      threshold=assessment.gate.threshold, refusals=assessment.gate_refusals,
                      reason=None if fitted or lineage is None else
                      f"kept from the parent: fewer than {params.gate_min_images} training "
                      "images to fit one")


def build_manifest(trained: TrainedVersion, params: TrainingParams, dataset: Dataset,
                   weights: Path | None, parent: str | None, promotion: Promotion,
                   external: dict[str, ExternalFigures] | None = None,
                   lineage: Lineage | None = None) -> ManifestDraft:
    """Everything a user needs to judge and reproduce the version (registry adds checksums).
    The image size and preprocessing are recorded once, here at the top level."""
    assessment = trained.assessment
    test = assessment.metrics.test
    return ManifestDraft(
        created_at=datetime.now(UTC), parent=parent, lineage=lineage, classes=dataset.classes,
        image_size=params.image_size,
        preprocessing=preprocessing_id(params.preprocess_options),
        preprocessing_options=params.preprocess_options.as_dict(),
        architecture="vgg16-gap-dropout-dense",
        training=TrainingRecord.of(params, trained.phases),
        base_weights=BaseWeightsRecord(choice=params.base_weights,
                                       sha256=sha256_file(weights) if weights else None),
        dataset=_dataset(dataset, params), sources=_sources(dataset, params),
        split=trained.split, metrics=assessment.metrics,
        calibration=_calibration(assessment.temperature, test),
        history=trained.history, libraries=library_versions(), promotion=promotion,
        distribution_shift=_shift(assessment.shift, test),
        reliability=assessment.reliability,
        chest_xray_gate=_gate(assessment, params, sum(
            trained.split.train.counts.values()) if trained.split.train else 0, lineage),
        external_evaluations=external or None,
    )
