"""Request, response and manifest models shared by the API, the worker and the CLI."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.config import BaseWeights
from shared.ml.preprocessing import PreprocessOptions
from shared.ml.reliability import UnreliableReason

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class TrainingParams(BaseModel):
    """A retrain request: everything but ``dataset`` has a documented default."""

    # Strict: the documented types only, no `"seed": false` taken for 0 or "20" for 20.
    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(pattern=NAME_PATTERN, description="Name of a dataset under CXR_DATA_DIR.")
    datasets: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=8,
        description="More stored datasets trained on with `dataset` (classes matched by "
        "name); each image's source is recorded and the test split is scored per source.")
    external_datasets: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=8,
        description="Stored datasets from other hospitals (one class is enough) scored before "
        "publishing; the figures go into the manifest and the model card.")
    group_by_source: bool = Field(
        False, description="Keep each source's images in one split.")
    holdout_source: str | None = Field(
        None, pattern=NAME_PATTERN, description="Leave this source (`dataset` or one of "
        "`datasets`) out of training: the test split is its images alone.")
    epochs: int = Field(20, ge=1, le=500, description="Epochs of the head on the frozen base.")
    batch_size: int = Field(16, ge=1, le=256)
    image_size: int = Field(224, ge=32, le=512, description="Square input size in pixels.")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Adam learning rate of phase one.")
    base_weights: BaseWeights = Field(
        "imagenet",
        description="VGG16 base: 'imagenet' (Keras download and cache), 'file' "
        "(CXR_BASE_WEIGHTS_FILE, checked against CXR_BASE_WEIGHTS_SHA256) or 'none'.",
    )
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Split and initialisation seed; drawn if omitted."
    )
    fine_tune: bool = Field(True, description="Unfreeze block5 and continue training.")
    fine_tune_epochs: int = Field(10, ge=1, le=500)
    fine_tune_learning_rate: float = Field(1e-5, gt=0, le=1)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    dropout: float = Field(0.5, ge=0, lt=1)
    groups_csv: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.csv$",
        description="A CSV at the dataset's root whose group_column (e.g. a patient id) keeps "
        "a group's images in one split; its 'file' column names each image.")
    group_column: str = Field("patient_id", min_length=1, max_length=64)
    equalize: Literal["none", "histogram", "clahe"] = Field(
        "none", description="Contrast equalization before resizing, applied at serving too; "
        "reduces differences between sources.")
    crop_border: float = Field(0.0, ge=0, le=0.2, description=(
        "Fraction cut from each side before resizing (markers and text sit there)."))
    clahe_clip_limit: float = Field(0.01, ge=0, le=1)
    intensity_augmentation: bool = Field(
        False, description="Also augment training images with what differs between "
        "hospitals rather than diseases: exposure, contrast, gamma, blur and noise.")
    class_weights: bool = Field(
        True, description="Weight the loss by inverse class frequency of the training split.")
    early_stopping_patience: int = Field(
        5, ge=0, le=100,
        description="Epochs without a lower val_loss before a phase stops, keeping its best "
        "weights; 0 disables.")
    head_cache_views: int = Field(
        0, ge=0, le=16,
        description="With real base weights, train the head on base features computed once "
        "for this many views of each training image (the first un-augmented) instead of "
        "running the frozen base every epoch; 0 keeps it live with fresh augmentation.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="'cosine': warm up linearly over warmup_fraction of each phase, then decay "
        "to zero by its last epoch or, sooner, by the end of time_budget_s.")
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    time_budget_s: int | None = Field(
        None, ge=60, le=7 * 24 * 3600,
        description="Stop training (and evaluate and publish) once another epoch would "
        "exceed this many seconds of training.")
    confidence_coverage: float = Field(
        0.95, ge=0.5, le=1.0,
        description="Share of validation answers kept above the low-confidence threshold; "
        "answers below it are marked low_confidence.")
    gate_min_images: int = Field(
        500, ge=0, le=1_000_000,
        description="Fit the chest-radiograph gate only with at least this many training "
        "images: fitted on a few dozen it refused up to 7% of unseen films of the same "
        "source. A version without a gate answers every image.")
    activate: Literal["if_better", "always", "never"] = Field(
        "if_better",
        description="'if_better': become active only if not worse than the active version on "
        "the promotion metric (CXR_PROMOTION_METRIC, within CXR_PROMOTION_MARGIN) on this "
        "version's test split, and better than chance on it; else published as a candidate. "
        "'always' or 'never' decide alone.")

    @model_validator(mode="after")
    def _sources_named(self) -> TrainingParams:
        names = [self.dataset, *self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("a dataset is named twice in dataset and datasets")
        if self.holdout_source is not None and self.holdout_source not in names:
            raise ValueError("holdout_source must be dataset or one of datasets")
        if self.holdout_source is not None and len(names) < 2:
            raise ValueError("holdout_source needs at least one more dataset to train on")
        return self

    def seeded(self) -> TrainingParams:
        """The request with its seed drawn, if it has none: recorded before any work, so a
        run can be repeated and a redelivered job resumes its own checkpoint."""
        if self.seed is not None:
            return self
        return self.model_copy(update={"seed": secrets.randbelow(2**31)})

    @property
    def preprocess_options(self) -> PreprocessOptions:
        # Every new version decodes large images at reduced size (bounded decode memory).
        return PreprocessOptions(equalize=self.equalize, crop_border=self.crop_border,
                                 clahe_clip_limit=self.clahe_clip_limit, reduce_large=True)

    @property
    def total_epochs(self) -> int:
        # A random base is trained whole in one phase; fine-tuning applies to real weights.
        tuned = self.fine_tune and self.base_weights != "none"
        return self.epochs + (self.fine_tune_epochs if tuned else 0)


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


class EpochMetrics(BaseModel):
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_balanced_accuracy: float | None = None
    elapsed_s: float | None = Field(None, description="Training wall time so far.")


class EpochPoint(EpochMetrics):
    epoch: int
    phase: str | None = None


class JobProgress(BaseModel):
    epoch: int = 0
    epochs: int
    phase: str | None = None
    last: EpochMetrics | None = None
    history: list[EpochPoint] = Field(
        default_factory=list, description="Every epoch so far, in order (a live chart).")


class EvaluationParams(BaseModel):
    """An external evaluation: a published version scored on a stored dataset."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(pattern=NAME_PATTERN, description="Name of a dataset under CXR_DATA_DIR.")
    version: str = Field(description="The model version to evaluate.")


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(pattern=NAME_PATTERN, description="Name of a dataset under CXR_DATA_DIR.")


class JobStatus(BaseModel):
    job_id: str
    kind: Literal["train", "evaluate"] = "train"
    state: JobState
    progress: JobProgress
    model_version: str | None = None
    error: str | None = None
    dataset: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    request_id: str | None = Field(
        None, description="X-Request-ID of the request that queued the job; the worker's log "
        "lines about the job carry it too.")


class JobList(BaseModel):
    jobs: list[JobStatus]


class JobAccepted(BaseModel):
    job_id: str
    status_url: str


class DatasetInfo(BaseModel):
    name: str
    classes: dict[str, int] = Field(description="Images per class, in label order.")
    images: int
    layout: str = Field(description="'class-folders' or 'covid19-radiography'.")


class DatasetList(BaseModel):
    datasets: list[DatasetInfo]


class ServingState(BaseModel):
    version: str | None = Field(description="The version this API process is serving.")
    load_error: str | None = Field(None, description="Why the active version is not served.")
    runtime: str | None = Field(None, description="'tensorflow' or 'onnx'.")
    precision: str | None = Field(None, description="'float32' or 'int8'.")


class DistributionShift(BaseModel):
    score: float = Field(description="How far the image lies from the training split: the "
                         "largest of the version's detectors, each standardized on validation.")
    threshold: float = Field(description="A high quantile of the validation split's scores.")
    flagged: bool = Field(description="True when the image lies outside what the model was "
                          "trained on: do not trust the probabilities.")


class Explanation(BaseModel):
    """Where the network looked for one class (Grad-CAM), from the pass that answered."""

    method: Literal["grad-cam"] = "grad-cam"
    layer: str = Field(description="The convolution the map is computed on.")
    class_name: str = Field(description="The class explained: the predicted one unless asked.")
    image_png: str = Field(description="Base64 PNG: the X-ray as the model saw it, in gray, "
                           "at most 512 pixels on its longest side.")
    overlay_png: str = Field(description="Base64 PNG of the same size: the heat map over it.")
    grid: list[list[float]] = Field(
        description="The map at the layer's own resolution, rows top to bottom, in [0, 1].")


class ChestXrayCheck(BaseModel):
    """The gate before classification: is the image a chest radiograph at all?"""

    score: float | None = Field(description="The gate's score (higher is more like the "
                                "training radiographs); null when a rule decided alone.")
    threshold: float = Field(description="Scores below it are not chest radiographs.")
    passed: bool
    reason: str | None = Field(None, description="Why it did not pass, in words.")


class Prediction(BaseModel):
    label: str = Field(description="The most probable class. Not a finding when "
                       "`reliable` is false: read `reasons`.")
    probabilities: dict[str, float] = Field(description="Temperature-calibrated.")
    model_version: str
    reliable: bool = Field(True, description="False when the answer should not be taken as "
                           "a finding; `reasons` says why.")
    reasons: list[UnreliableReason] = Field(
        default_factory=list, description="not_a_chest_xray (with CXR_XRAY_GATE=warn), "
        "shifted (unlike the training images), low_confidence (top probability below the "
        "version's threshold), version_not_better_than_chance (its test balanced accuracy "
        "interval includes chance).")
    confidence_threshold: float | None = Field(
        None, description="The version's low-confidence threshold on the top probability.")
    chest_xray: ChestXrayCheck | None = Field(
        None, description="The chest-radiograph gate; absent for versions without one or "
        "with CXR_XRAY_GATE=off.")
    distribution_shift: DistributionShift | None = Field(
        None, description="Absent for versions published without a shift reference.")
    explanation: Explanation | None = Field(None, description="Only with ?explain=true.")
    precision: Literal["float32", "int8"] = Field(
        "float32", description="The arithmetic of the pass that answered: int8 for the "
        "version's checked INT8 copy (see its manifest's `int8`); heat maps are always "
        "float32.")


class ImageAnswer(BaseModel):
    """One image of a request with several: its answer, or the error it alone would get."""

    index: int = Field(description="Its position among the request's `file` parts, from 0.")
    filename: str | None = None
    status: int = Field(description="200, or the status a request with this image alone "
                        "would have got.")
    prediction: Prediction | None = None
    error: ErrorDetail | None = None


class Predictions(BaseModel):
    """The answers to a request with several images, in the order they were sent."""

    model_version: str
    images: list[ImageAnswer]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    model_version: str | None
    model_runtime: str | None = Field(None, description="'tensorflow' or 'onnx'.")
    model_precision: str | None = Field(None, description="'float32' or 'int8'.")
    model_batch_size: int | None = Field(
        None, description="The largest batch gathered for the model: the size measured "
        "fastest per image in its runtime at load, capped by CXR_BATCH_MAX_SIZE.")
    model_error: str | None = None
    broker: str = Field(description="'ok' or 'unreachable'.")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
