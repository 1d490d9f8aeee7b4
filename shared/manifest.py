"""The manifest: everything recorded with a published version (``manifest.json``).

It is the one contract between the worker, which builds a ``ManifestDraft``, the registry,
which seals it into a ``Manifest`` (version id, checksums), and every reader: the API, the
loader, the CLI and the model card. Every part is typed; unknown keys are kept, so a reader
older than the worker that wrote a version still reads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.config import PromotionMetric
from shared.ml.preprocessing import Equalization
from shared.ml.reliability import (
    ReliabilityRecord,
    ReliableClass,
    ReliableSubset,
    RiskCoveragePoint,
    above_chance,
)
from shared.schemas import ServingState
from shared.training_params import TrainingParams

# Request fields a manifest records at its top level (image_size, preprocessing_options).
WRITTEN_AT_TOP = ("image_size", "equalize", "crop_border", "clahe_clip_limit")


class Record(BaseModel):
    """A part of the manifest: typed fields, and whatever later workers add kept as it is.
    Frozen: a sealed version never changes, and readers share one parsed copy."""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())


class ClassRates(Record):
    """One-vs-rest rates of one class with their 95% Wilson intervals; None when undefined."""

    support: int
    sensitivity: float | None = None
    sensitivity_ci: list[float] | None = None
    specificity: float | None = None
    specificity_ci: list[float] | None = None
    ppv: float | None = None
    ppv_ci: list[float] | None = None
    npv: float | None = None
    npv_ci: list[float] | None = None


class ConfusionMatrix(Record):
    labels: list[str]
    counts: list[list[int]] = Field(description="Rows true, columns predicted.")


class SplitMetrics(Record):
    """How a model did on one set of images: undefined numbers are None, never NaN."""

    images: int
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    macro_f1: float | None = None
    roc_auc: float | None = Field(None, description="Macro one-vs-rest ROC-AUC.")
    roc_auc_per_class: dict[str, float | None] = Field(default_factory=dict)
    ece: float | None = Field(None, description="Top-label ECE, 15 bins.")
    confusion_matrix: ConfusionMatrix | None = None
    per_class: dict[str, ClassRates] = Field(default_factory=dict)
    # Set on the test split of a training run only.
    ece_uncalibrated: float | None = None
    shift_flag_rate: float | None = None
    balanced_accuracy_ci: list[float] | None = None

    def score(self, metric: PromotionMetric) -> float | None:
        value: float | None = getattr(self, metric)
        return value


class SourceMetrics(Record):
    """One source's images of the test split, scored apart."""

    images: int
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    per_class: dict[str, ClassRates] = Field(default_factory=dict)


class Metrics(Record):
    test: SplitMetrics | None = None
    test_by_source: dict[str, SourceMetrics] | None = None


class SplitPart(Record):
    counts: dict[str, int]
    files_sha256: str | None = None
    sources: dict[str, int] | None = None


class SplitRecord(Record):
    """How the dataset was split: seed, method, near-duplicate groups, per-split counts."""

    seed: int | None = None
    method: str | None = None
    duplicate_groups: int | None = None
    images_in_duplicate_groups: int | None = None
    group_key: str | None = None
    holdout_source: str | None = None
    left_out_near_duplicates: int | None = None
    train: SplitPart | None = None
    validation: SplitPart | None = None
    test: SplitPart | None = None
    class_weights: dict[int, float] | None = None

    def parts(self) -> dict[str, SplitPart | None]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


class DevicesRecord(Record):
    """How a training phase used its machine (``worker.training.devices``)."""

    gpus: int | None = None
    threads: int | None = None
    jit_compile: bool | None = None
    precision_policy: str | None = None
    strategy: str | None = None
    replicas: int | None = None
    devices: list[str] | None = None
    onednn: str | None = None


class Phase(Record):
    """One training phase: the head on the frozen base, then fine-tuning."""

    # Written and read as "runtime", its key since the first manifests that had it.
    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    phase: str
    learning_rate: float
    epochs: int
    epochs_run: int | None = None
    cached_views: int | None = None
    devices: DevicesRecord | None = Field(None, alias="runtime")


class TrainingRecord(TrainingParams):
    """The retrain request as run (its seed drawn) and its phases. The image size and the
    preprocessing are written once, at the manifest's top level: an older manifest's copies
    here are read and never written again, so no default can contradict them."""

    # Lenient: it reads what older workers wrote, which the request schema may now refuse.
    model_config = ConfigDict(extra="allow", strict=False)

    image_size: int | None = Field(None, exclude=True)  # type: ignore[assignment]
    equalize: Equalization | None = Field(None, exclude=True)  # type: ignore[assignment]
    crop_border: float | None = Field(None, exclude=True)  # type: ignore[assignment]
    clahe_clip_limit: float | None = Field(None, exclude=True)  # type: ignore[assignment]
    phases: list[Phase] = Field(default_factory=list)

    @classmethod
    def of(cls, params: TrainingParams, phases: list[Phase]) -> TrainingRecord:
        """The record of a request as run, without what the top level records."""
        return cls(**params.model_dump(exclude=set(WRITTEN_AT_TOP)), phases=phases)


class BaseWeightsRecord(Record):
    choice: str | None = None
    sha256: str | None = None


class DatasetRecord(Record):
    name: str
    fingerprint: str | None = Field(None, description="sha256 over labels, names, contents.")
    layout: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)


TemperatureBound = Literal["lower", "upper"]


class Calibration(Record):
    method: str = "temperature"
    temperature: float = 1.0
    fitted_on: str = "validation"
    ece_before: float | None = None
    ece_after: float | None = None
    at_bound: TemperatureBound | None = Field(
        None, description="The bound of the temperature search the fit ended at: the best "
        "temperature lies beyond it, so the probabilities are not calibrated. Null when the "
        "fit ended inside, and for versions published before it was recorded.")


class ShiftRecord(Record):
    method: str | None = None
    features: str | None = None
    layout: str | None = None
    fitted_on: str | None = None
    threshold: float | None = None
    threshold_quantile_of_validation: float | None = None
    test_flag_rate: float | None = None


class GateCount(Record):
    refused: int
    images: int


class GateRecord(Record):
    """The chest-radiograph gate, or why the version has none."""

    method: str | None = None
    fitted_on: str | None = None
    threshold: float | None = None
    reason: str | None = None
    refusals: dict[str, GateCount] = Field(
        default_factory=dict, description="Radiographs the gate refuses, per split of the "
        "version's own data (train, validation, test).")


class OnnxExport(Record):
    """The ONNX export: its file once checked against Keras, or why there is none."""

    file: str | None = None
    error: str | None = None
    max_difference: float | None = None
    checked_images: int | None = None
    exporter: str | None = None


class Int8Check(Record):
    """The INT8 copy beside the float export on the version's test split."""

    images: int
    top1_agreement: float
    balanced_accuracy_float: float
    balanced_accuracy_int8: float
    max_probability_difference: float = Field(description="Calibrated probabilities.")
    shift_flag_agreement: float | None = None
    max_shift_score_difference: float | None = None


class RuntimeCheck(Record):
    """Another runtime on the INT8 copy, held to the copy's own check (the same test images
    beside the float export, the same limits): it may serve the version only where passed."""

    runtime: str
    runtime_version: str | None = None
    passed: bool = False
    check: Int8Check | None = None
    error: str | None = Field(None, description="Why it may not serve: the limits it "
                              "crossed, or how it failed (not installed, say).")
    seconds: float | None = Field(None, description="Loading and checking.")


class Int8Export(Record):
    """The INT8 copy of the ONNX export: its file when its check passed, or why there is
    none, with the check's figures and the limits it was held to."""

    file: str | None = None
    error: str | None = None
    scheme: str | None = None
    calibration: str | None = Field(None, description="The calibration method.")
    calibration_images: int | None = None
    check: Int8Check | None = None
    min_agreement: float | None = None
    max_balanced_accuracy_drop: float | None = None
    seconds: float | None = Field(None, description="Quantizing and checking.")
    openvino: RuntimeCheck | None = Field(
        None, description="OpenVINO on the kept copy; None where there is no copy, or the "
        "version was published before OpenVINO was checked (it may not serve it then).")


class PairedComparison(Record):
    """Two versions scored on the same images: the difference of their balanced accuracy
    (``first`` minus ``second``) with its paired bootstrap interval, and McNemar's exact test
    on the images one got right and the other wrong."""

    images: int
    first: str = Field(description="The version whose score comes first (a fine-tune: it).")
    second: str
    first_balanced_accuracy: float | None = None
    second_balanced_accuracy: float | None = None
    difference: float | None = Field(None, description="first minus second.")
    difference_ci: list[float] | None = Field(
        None, description="95% paired bootstrap interval of the difference (the same "
        "resampled images for both versions).")
    only_first_right: int = 0
    only_second_right: int = 0
    mcnemar_p: float | None = Field(
        None, description="Exact McNemar p-value; None when no image separates them.")


class Lineage(Record):
    """Where a fine-tuned version comes from: its parent, the films it added, the parent's
    films it replayed, and the parent's own figures."""

    parent: str
    parent_dataset: str | None = None
    added: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Images per class of each dataset fine-tuned on.")
    replayed: dict[str, int] | None = Field(
        None, description="Images per class replayed from the parent's training split.")
    parent_data: str | None = Field(
        None, description="Why the parent's own films were not used, when they were not.")
    parent_test: SplitMetrics | None = Field(
        None, description="The parent's figures on its own test split, from its manifest.")


class Promotion(Record):
    """Whether the promotion decision activated the version at publish time, and why."""

    mode: str
    metric: str
    margin: float
    new: float | None = None
    active_version: str | None = None
    active: float | None = None
    activated: bool
    reason: str
    paired: dict[str, PairedComparison] | None = Field(
        None, description="A fine-tune against its parent on the same images: the site's "
        "test split and the parent's own.")


class ExternalFigures(Record):
    """An external set's figures, as the manifest and card carry them."""

    images: int
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    roc_auc: float | None = None
    sensitivity: dict[str, float | None] = Field(default_factory=dict)
    gate_refused: int | None = None
    shift_flagged: int | None = None
    shift_auroc: float | None = None
    reliable_share: float | None = None
    reliable_balanced_accuracy: float | None = None
    risk_coverage: list[RiskCoveragePoint] | None = None
    reliable_per_class: dict[str, ReliableClass] = Field(
        default_factory=dict, description="Per true class: answers marked reliable and recall.")


class ManifestDraft(Record):
    """What the worker records about a trained version before the registry seals it."""

    created_at: datetime
    parent: str | None = None
    lineage: Lineage | None = Field(None, description="Set on a fine-tune of a version.")
    classes: list[str]
    image_size: int
    dataset: DatasetRecord
    preprocessing: str | None = None
    preprocessing_options: dict[str, object] | None = None
    architecture: str | None = None
    training: TrainingRecord | None = Field(
        None, description="The retrain request and its phases.")
    base_weights: BaseWeightsRecord = Field(default_factory=BaseWeightsRecord)
    sources: dict[str, dict[str, int]] | None = Field(
        None, description="Images per class of each dataset trained on together.")
    split: SplitRecord = Field(default_factory=SplitRecord)
    metrics: Metrics = Field(default_factory=Metrics)
    history: dict[str, list[float]] = Field(default_factory=dict,
                                            description="Per-epoch loss, accuracy, val_*.")
    libraries: dict[str, str] = Field(default_factory=dict)
    promotion: Promotion | None = None
    calibration: Calibration | None = Field(
        None, description="Temperature fitted on validation, applied by /predict; ECE before "
        "and after on the test split.")
    distribution_shift: ShiftRecord | None = None
    reliability: ReliabilityRecord | None = Field(
        None, description="How the version marks its own answers unreliable.")
    chest_xray_gate: GateRecord | None = None
    onnx: OnnxExport | None = None
    int8: Int8Export | None = None
    external_evaluations: dict[str, ExternalFigures] | None = None

    def training_params(self) -> TrainingParams | None:
        """The request as run, its image size and preprocessing read from the top level
        (where a new manifest records them once); None when no training is recorded."""
        if self.training is None:
            return None
        options = {key: value for key, value in (self.preprocessing_options or {}).items()
                   if key in WRITTEN_AT_TOP}
        return TrainingParams.model_validate(
            {**self.training.model_dump(include=set(TrainingParams.model_fields)),
             "image_size": self.image_size, **options})

    def seal(self, version: str, files: dict[str, str], model_sha256: str) -> Manifest:
        # Validated again: a draft's own (extra) version or checksums never survive sealing.
        return Manifest.model_validate({**dict(self), "version": version, "files": files,
                                        "model_sha256": model_sha256})


class Manifest(ManifestDraft):
    """A published version's manifest: the draft, its id and the sha256 of its files."""

    version: str
    model_sha256: str
    files: dict[str, str] = Field(default_factory=dict,
                                  description="sha256 of every file of the version.")

    @property
    def temperature(self) -> float:
        return self.calibration.temperature if self.calibration else 1.0

    @property
    def effective_reliability(self) -> ReliabilityRecord | None:
        """The version's record; for one published before the record, what its test interval
        alone says (whether it beats chance; no confidence threshold), so that its answers are
        marked as any other version's are."""
        test = self.metrics.test
        if self.reliability is not None or test is None or test.balanced_accuracy_ci is None:
            return self.reliability
        chance = 1 / len(self.classes)
        return ReliabilityRecord(
            confidence_threshold=None, confidence_coverage=1.0, chance=chance,
            balanced_accuracy_ci=test.balanced_accuracy_ci,
            better_than_chance=above_chance(test.balanced_accuracy_ci, chance))

    def summary(self) -> ModelSummary:
        test, record = self.metrics.test, self.effective_reliability
        return ModelSummary(version=self.version, created_at=self.created_at,
                            dataset=self.dataset.name, classes=self.classes,
                            image_size=self.image_size, metrics=self.metrics,
                            parent=self.parent, lineage=self.lineage,
                            promotion=self.promotion,
                            test_images=test.images if test else None,
                            balanced_accuracy_ci=record.balanced_accuracy_ci if record else None,
                            chance=1 / len(self.classes),
                            better_than_chance=record.better_than_chance if record else None,
                            calibration=self.calibration)


class ModelSummary(BaseModel):
    """A version as the models list shows it."""

    version: str
    created_at: datetime
    dataset: str
    classes: list[str]
    image_size: int
    metrics: Metrics
    parent: str | None = None
    lineage: Lineage | None = Field(None, description="Its parent, when it is a fine-tune.")
    promotion: Promotion | None = Field(
        None, description="Whether the promotion decision activated this version at publish "
        "time, and why.")
    test_images: int | None = Field(None, description="Images in its held-out test split.")
    balanced_accuracy_ci: list[float] | None = Field(
        None, description="95% bootstrap interval of its test balanced accuracy.")
    chance: float = Field(description="The balanced accuracy of chance: 1 / classes.")
    better_than_chance: bool | None = Field(
        None, description="Its test balanced accuracy interval lies above chance; null for "
        "versions published with neither the interval nor the record.")
    calibration: Calibration | None = Field(
        None, description="Its temperature, and whether the fit ended at a bound.")


class ModelList(BaseModel):
    active: str | None
    versions: list[ModelSummary]
    serving: ServingState


class VersionDetail(Manifest):
    """A version's manifest and, when this API process serves it, how."""

    serving: ServingState | None = Field(
        None, description="Set when this process serves the version: its runtime and "
        "precision.")


class EvaluatedDataset(DatasetRecord):
    class_mapping: dict[str, str] = Field(
        default_factory=dict, description="Each of the set's labels -> the version's class.")


class ShiftBreakdown(Record):
    """How many of a set's images the shift score flags, and the metrics on each side."""

    threshold: float
    flagged: int
    images: int
    metrics: dict[str, SplitMetrics] = Field(default_factory=dict)
    auroc_vs_test: float | None = Field(
        None, description="AUROC of the score between the version's test split and this set.")


class ExternalReport(Record):
    """A published version scored on another labelled set (``cxr evaluate``), kept by the
    registry beside the version, never inside it."""

    kind: str = "external"
    version: str
    evaluated_at: datetime
    dataset: EvaluatedDataset
    metrics: SplitMetrics
    sensitivity: dict[str, float | None] = Field(
        default_factory=dict, description="With one class, accuracy is its sensitivity.")
    chest_xray_gate: GateCount | None = None
    distribution_shift: ShiftBreakdown | None = None
    reliability: ReliableSubset | None = None
    comparison: PairedComparison | None = Field(
        None, description="With --compare: this version against the other on these images.")

    def figures(self) -> ExternalFigures:
        """What a manifest and its card carry of the report."""
        shift, reliable = self.distribution_shift, self.reliability
        return ExternalFigures(
            images=self.metrics.images, accuracy=self.metrics.accuracy,
            balanced_accuracy=self.metrics.balanced_accuracy, roc_auc=self.metrics.roc_auc,
            sensitivity=self.sensitivity,
            gate_refused=self.chest_xray_gate.refused if self.chest_xray_gate else None,
            shift_flagged=shift.flagged if shift else None,
            shift_auroc=shift.auroc_vs_test if shift else None,
            reliable_share=reliable.coverage if reliable else None,
            reliable_balanced_accuracy=reliable.balanced_accuracy if reliable else None,
            risk_coverage=reliable.risk_coverage if reliable else None,
            reliable_per_class=reliable.per_class if reliable else {})
