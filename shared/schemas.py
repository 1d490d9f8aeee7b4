"""Request and response models of the API, shared with the worker and the CLI (the
manifest's are in ``shared/manifest.py``, a retrain job's parameters in
``shared/training_params.py``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Why an answer is not a finding (shared/ml/reliability.py decides).
UnreliableReason = Literal["not_a_chest_xray", "shifted", "low_confidence",
                           "version_not_better_than_chance"]


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
    compare: str | None = Field(
        None, description="Another version scored on the same images: the report gives the "
        "paired difference of their balanced accuracy with its interval.")


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(pattern=NAME_PATTERN, description="Name of a dataset under CXR_DATA_DIR.")
    compare: str | None = Field(
        None, max_length=64, description="Another version ('active' or an id) scored on the "
        "same images, with the paired interval of the difference.")


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
    runtime: str | None = Field(None, description="'tensorflow', 'onnx' or 'openvino'.")
    precision: str | None = Field(None, description="'float32' or 'int8'.")


class DistributionShift(BaseModel):
    score: float = Field(description="How far the image lies from the training split: the "
                         "largest of the version's detectors, each standardized on validation.")
    threshold: float = Field(description="A high quantile of the validation split's scores.")
    flagged: bool = Field(description="True when the image lies outside what the model was "
                          "trained on: do not trust the probabilities.")


# The convolutions a heat map can be computed on, deepest (coarsest grid) first; "auto"
# picks one by the version's image size (shared/ml/explain.py, ``choose_layer``).
CamLayer = Literal["block5_conv3", "block4_conv3", "block3_conv3"]
ExplainLayer = Literal["auto", CamLayer]


class Explanation(BaseModel):
    """Where the network looked for one class (Grad-CAM), from the pass that answered."""

    method: Literal["grad-cam"] = "grad-cam"
    layer: CamLayer = Field(description="The convolution the map is computed on.")
    class_name: str = Field(description="The class explained: the predicted one unless asked.")
    image_png: str = Field(description="Base64 PNG: the X-ray as the model saw it, in gray, "
                           "at most 512 pixels on its longest side.")
    overlay_png: str = Field(description="Base64 PNG of the same size: the heat map over it, "
                             "each cell of `grid` one uniform block (the map knows no finer).")
    grid_shape: list[int] = Field(
        description="[rows, cols] of `grid`: how coarse the map is. A 64 px version's "
        "block5_conv3 is 4x4: each cell a quarter of the image's width and height.")
    grid: list[list[float]] = Field(
        description="The map at the layer's own resolution, rows top to bottom, in [0, 1].")

    @model_validator(mode="after")
    def _shape_is_the_grids(self) -> Explanation:
        shape = [len(self.grid), len(self.grid[0]) if self.grid else 0]
        if self.grid_shape != shape or any(len(row) != shape[1] for row in self.grid):
            raise ValueError(f"grid_shape {self.grid_shape} is not the grid's {shape}")
        return self


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
    prediction_id: str | None = Field(
        None, description="This answer in the prediction log: name it to label the image "
        "(POST /predictions/{id}/label). Null where nothing is logged (CXR_PREDICTION_LOG "
        "off, or `cxr predict`, which answers on its own).")


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
    model_runtime: str | None = Field(None, description="'tensorflow', 'onnx' or "
                                      "'openvino'.")
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
