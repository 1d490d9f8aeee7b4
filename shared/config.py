"""Typed settings, read once from ``CXR_``-prefixed environment variables."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _in_working_dir(*parts: str) -> Path:
    # Where the command starts, never where the code is installed: a `pip install .` must
    # not write models into site-packages.
    return Path.cwd().joinpath(*parts)


BaseWeights = Literal["imagenet", "file", "none"]


def key_digest(key: str) -> str:
    """What the server holds of an API key: its sha256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


# How the INT8 copy's activation ranges are calibrated (ONNX Runtime's methods).
Int8Calibration = Literal["minmax", "entropy", "percentile"]
# The arithmetic /predict may answer in, named as answers name it: "float32" never serves an
# INT8 copy; "int8" serves it wherever a version has one; "auto" times both.
Precision = Literal["auto", "float32", "int8"]
# The runtime of /predict's forward pass: "auto" times each a version has; "openvino" serves
# the INT8 copy in OpenVINO where its check at publication passed.
InferenceRuntime = Literal["auto", "tensorflow", "onnx", "openvino"]
# The test metrics a new version may be compared with the active one on.
PromotionMetric = Literal["balanced_accuracy", "accuracy", "macro_f1"]
# What the chest-radiograph gate's verdict does to an answer: refuse the image (422
# not_a_chest_xray), warn (answer it, marked not a finding) or nothing (not asked).
GateMode = Literal["refuse", "warn", "off"]
# One image's pixels, as decoded; more is refused before decoding (CXR_MAX_IMAGE_PIXELS).
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


ShadowPriority = Literal["idle", "low", "normal"]


class ApiKey(BaseModel):
    """One API key as the server knows it: the sha256 of the key, never the key itself."""

    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    # admin: every change; labeler: labels predictions (and reads); reader: reads only.
    role: Literal["admin", "labeler", "reader"]


class Settings(BaseSettings):
    """Everything the API, the worker and the CLI can be configured with."""

    model_config = SettingsConfigDict(env_prefix="CXR_", env_file=None, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One JSON object per log line (for log shippers), or plain text for a terminal.
    log_format: Literal["json", "text"] = "json"
    # Browser origins allowed to call the API from their pages (CORS), e.g.
    # ["https://viewer.example.org"]. Empty, the default: no cross-origin access at all.
    cors_origins: list[str] = []
    # API keys, sent in the X-API-Key header (`cxr key` makes one): a JSON list of
    # {"name", "sha256", "role"}. Retraining, cancelling, activating and uploading datasets
    # always need an admin key, so with none configured they are closed; predictions and
    # reads need a key (any role) only when CXR_REQUIRE_KEY_FOR_READS is true.
    api_keys: list[ApiKey] = []
    require_key_for_reads: bool = False

    # Unset: models/, var/data/ and var/state/ under the directory the command starts in.
    data_dir: Path = Field(default_factory=lambda: _in_working_dir("var", "data"))
    models_dir: Path = Field(default_factory=lambda: _in_working_dir("models"))
    state_dir: Path = Field(default_factory=lambda: _in_working_dir("var", "state"))
    # The registry on S3-compatible object storage instead of models_dir, shared by API
    # replicas and workers on several hosts: s3://bucket/prefix. Credentials come the standard
    # AWS ways (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role).
    models_uri: str | None = Field(None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    # Another S3 API than AWS's, e.g. MinIO: http://minio:9000.
    s3_endpoint_url: str | None = Field(None, pattern=r"^https?://")
    # Where a process keeps checksum-verified copies of the versions it loads from object
    # storage (unset: state_dir/model-cache).
    model_cache_dir: Path | None = None

    # None selects the embedded broker (kombu's SQLAlchemy transport on SQLite in state_dir).
    broker_url: str | None = None

    reload_interval_s: float = Field(2.0, gt=0, le=3600)
    # Dynamic batching of /predict: a batch holds at most this many images (fewer when the
    # version's runtime measured fastest per image at a smaller batch), and waits for company
    # at most this long, only while other requests are being decoded (api/inference/batching.py).
    batch_max_size: int = Field(16, ge=1, le=256)
    batch_max_delay_ms: float = Field(5.0, ge=0, le=1000)
    # Runtime of /predict: "auto" times ONNX Runtime (when the version has an export) against
    # TensorFlow, and the INT8 copy in ONNX Runtime and OpenVINO (where each passed its check),
    # on each version as it loads and keeps the fastest. "openvino" serves the INT8 copy in
    # OpenVINO where its check passed, else (with a warning) the copy in ONNX Runtime, or float
    # where the version has no copy or CXR_INFERENCE_PRECISION is float32.
    inference_runtime: InferenceRuntime = "auto"
    # "auto" times a version's INT8 copy (where its check kept one) with the float runtimes
    # and keeps the fastest; "float32" never serves INT8 (a clinical study may require it).
    inference_precision: Precision = "auto"
    # Threads of one forward pass (unset: the runtime's default, all cores) and, for
    # TensorFlow, how many independent operations may run at once.
    inference_threads: int | None = Field(None, ge=1, le=256)
    inference_inter_op_threads: int | None = Field(None, ge=1, le=256)
    # How often a running job tells the store it is alive (and learns of a cancellation);
    # one whose worker has not reported for the timeout is declared lost.
    job_heartbeat_interval_s: float = Field(2.0, gt=0, le=60)
    job_heartbeat_timeout_s: float = Field(300.0, ge=10)
    job_time_limit_s: int = Field(6 * 3600, ge=60)
    # A redelivered job (its worker died) is taken over once its heartbeat has been silent
    # this long, and resumed from its last epoch checkpoint, up to job_max_attempts runs.
    job_takeover_after_s: float = Field(20.0, ge=5)
    job_max_attempts: int = Field(2, ge=1, le=10)
    # The worker's own Prometheus metrics (jobs, epochs, training time) on this port; unset,
    # none are served.
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    # The promotion decision: a new version replaces the active one only when not worse than
    # it by more than the margin on this metric, both measured on the new version's test split.
    promotion_metric: PromotionMetric = "balanced_accuracy"
    promotion_margin: float = Field(0.01, ge=0, le=1)
    # A fine-tune must not lose more than this much balanced accuracy on its parent's own test
    # split: the lower end of the paired interval of the difference stays above -margin.
    promotion_parent_margin: float = Field(0.02, ge=0, le=1)
    # The decision never activates a version whose test balanced accuracy interval includes
    # chance (activate "always" and activating by hand still do); false lets it.
    promotion_refuse_chance: bool = True
    # The chest-radiograph gate before classification: refuse (422 not_a_chest_xray), warn
    # (answer, marked unreliable) or off.
    xray_gate: GateMode = "refuse"
    # Intra-op threads of a training process; leave a core to the API on a shared machine.
    worker_threads: int | None = Field(None, ge=1, le=256)
    # XLA for training steps; "auto": on with one GPU (where it pays), off on a CPU (where it
    # costs) and across several GPUs (XLA cannot compile a step mirrored over replicas).
    # Figures: bench/results/findings.md.
    train_jit_compile: bool | Literal["auto"] = "auto"
    # Each published version gets an ONNX export, checked against Keras, that "auto" and
    # "onnx" serving can use; off: versions are served by TensorFlow only, and publishing
    # skips the export (seconds to minutes of conversion per version).
    export_onnx: bool = True
    # And an INT8 copy of the export (worker/publishing/int8.py), kept only when on the
    # version's test split it agrees with the float model's top-1 on at least
    # int8_min_agreement of images (and on the shift flag) and its balanced accuracy is at
    # most int8_max_balanced_accuracy_drop lower; calibrated on that many training images.
    export_int8: bool = True
    int8_calibration: Int8Calibration = "minmax"
    int8_calibration_images: int = Field(64, ge=1, le=4096)
    int8_min_agreement: float = Field(0.99, ge=0, le=1)
    int8_max_balanced_accuracy_drop: float = Field(0.005, ge=0, le=1)
    # Mixed float16 on GPUs ("auto": on when every GPU TensorFlow sees has float16 Tensor
    # Cores, compute capability 7.0 or more); never on a CPU. The published model is float32
    # either way.
    mixed_precision: Literal["auto", "off"] = "auto"

    base_weights_file: Path | None = None
    base_weights_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")

    # The prediction log (every answer: version, label, probabilities, reliability, shift,
    # the image's sha256), beside the job store, kept this many days; off, answers carry no
    # prediction_id and nothing can be labelled or shadowed.
    prediction_log: bool = True
    prediction_log_days: float = Field(30.0, gt=0, le=3650)
    # Keep each answered image's decoded pixels as PNG (never a DICOM's header, which carries
    # patient data) for the log's retention, so that a label can file it into a dataset.
    keep_images: bool = False
    # Where kept images live (unset: data_dir/.kept-images, shared like the datasets).
    kept_images_dir: Path | None = None
    # The dataset that labelled kept images are filed into, one folder per class.
    labels_dataset: str = Field("site-labels", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    # Images waiting for the shadow version; when full, more are dropped (and counted), so
    # the shadow never delays an answer.
    shadow_queue_size: int = Field(64, ge=1, le=100_000)
    # The shadow's CPU priority: "idle" runs it only on cores the answers leave idle
    # (SCHED_IDLE, Linux), "low" at nice 19, "normal" beside the answers.
    shadow_priority: ShadowPriority = "idle"
    # The audit trail (who changed what, and who was refused), kept this many days.
    audit_days: float = Field(365.0, gt=0, le=36500)
    # After each publish, delete the oldest candidates beyond this many (never the active
    # version, the shadow, or their parents); unset keeps every version.
    keep_candidates: int | None = Field(None, ge=0)

    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    # A request's head (request line and header fields) and its number of header fields:
    # past either, 431 before any work.
    max_header_bytes: int = Field(64 * 1024, ge=4096)
    max_header_fields: int = Field(100, ge=10)
    # The body of a request that is not an upload (JSON: /retrain, /models/{v}/evaluate).
    max_json_bytes: int = Field(1024 * 1024, ge=1024)
    # The body of a /predict request (all its images together).
    max_image_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=64 * 64)
    # Images one /predict request may carry (several `file` parts, one answer each; their
    # bytes together stay within CXR_MAX_IMAGE_BYTES) or one infer request's BYTES input.
    max_images_per_request: int = Field(32, ge=1, le=1024)
    # What all the images being decoded and prepared at once may cost, estimated from what
    # each file really holds (shared.ml.decode_cost). An image that does not
    # fit waits, on the event loop, up to decode_wait_s; beyond decode_max_waiting waiting,
    # or after the wait, 503 busy.
    decode_budget_mb: int = Field(1024, ge=16)
    decode_wait_s: float = Field(10.0, ge=0, le=300)
    decode_max_waiting: int = Field(64, ge=1)
    # Images decoded and prepared at once, each in a thread (unset: one per core this process
    # may run on): more threads than cores only take them from the forward pass.
    decode_threads: int | None = Field(None, ge=1, le=256)
    # After an image whose decoding costs at least this much, freed memory goes back to the
    # system (shared/allocator.py); 0 never.
    release_memory_after_mb: int = Field(32, ge=0)
    max_zip_members: int = Field(50_000, ge=1)
    max_zip_uncompressed_bytes: int = Field(4 * 1024**3, ge=1024)
    # Uncompressed over compressed size of one zip member: PNGs and JPEGs barely deflate,
    # uncompressed DICOMs a few times; a zip bomb a thousand times and more.
    max_zip_compression_ratio: float = Field(100.0, ge=1)

    @field_validator("data_dir", "models_dir", "state_dir", "model_cache_dir", "base_weights_file",
                     "kept_images_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # fixed when the settings load, so a later change of directory moves nothing
        return value.expanduser().absolute() if value is not None else None

    @field_validator("models_uri", "s3_endpoint_url", "kept_images_dir", "keep_candidates",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("inference_precision", mode="before")
    @classmethod
    def _float_is_float32(cls, value: object) -> object:
        # "float" was this setting's name for float32 before answers named it so; still read
        return "float32" if value == "float" else value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "sqla+sqlite://")):
            raise ValueError("CXR_BROKER_URL must be redis://, rediss:// or sqla+sqlite://")
        return value

    @model_validator(mode="after")
    def _heartbeat_within_its_timeouts(self) -> Settings:
        # a live job must beat a few times before anyone may call it silent
        if self.job_heartbeat_interval_s * 2 > min(self.job_takeover_after_s,
                                                   self.job_heartbeat_timeout_s):
            raise ValueError("CXR_JOB_HEARTBEAT_INTERVAL_S must be at most half of "
                             "CXR_JOB_TAKEOVER_AFTER_S and CXR_JOB_HEARTBEAT_TIMEOUT_S")
        return self

    @model_validator(mode="after")
    def _int8_needs_onnx_runtime(self) -> Settings:
        if self.inference_precision == "int8" and self.inference_runtime == "tensorflow":
            raise ValueError("CXR_INFERENCE_PRECISION=int8 needs ONNX Runtime: set "
                             "CXR_INFERENCE_RUNTIME to auto or onnx")
        return self

    @model_validator(mode="after")
    def _weights_file_needs_hash(self) -> Settings:
        if self.base_weights_sha256 and self.base_weights_file is None:
            raise ValueError("CXR_BASE_WEIGHTS_SHA256 is set but CXR_BASE_WEIGHTS_FILE is not")
        return self

    @property
    def effective_broker_url(self) -> str:
        """The broker in use: the configured one, or the embedded SQLite broker."""
        return self.broker_url or f"sqla+sqlite:///{self.state_dir / 'broker.sqlite'}"

    @property
    def effective_decode_threads(self) -> int:
        return self.decode_threads or len(os.sched_getaffinity(0))

    @property
    def effective_kept_images_dir(self) -> Path:
        return self.kept_images_dir or self.data_dir / ".kept-images"

    @property
    def effective_model_cache_dir(self) -> Path:
        return self.model_cache_dir or self.state_dir / "model-cache"

    @property
    def uses_redis(self) -> bool:
        return self.effective_broker_url.startswith(("redis://", "rediss://"))


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests clear the cache or pass their own."""
    return Settings()
