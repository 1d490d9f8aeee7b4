"""A retrain job's parameters: what ``POST /retrain`` and ``cxr train`` take, what the job
store keeps for the worker, and what a manifest records as the training that was run."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.config import BaseWeights
from shared.ml.preprocessing import MAX_CROP_BORDER, Equalization, PreprocessOptions
from shared.schemas import NAME_PATTERN

# A fine-tune from a served version (``base_version``) starts from a network that already
# classifies: a lower learning rate, a few epochs, one phase that stops on the site's
# validation loss, and more of the site's few films held out to prove it on.
FINE_TUNE_DEFAULTS: dict[str, object] = {
    "epochs": 20, "learning_rate": 2e-5, "early_stopping_patience": 3,
    "validation_fraction": 0.2, "test_fraction": 0.25, "base_weights": "none",
    "replay_fraction": 0.67}
VERSION_PATTERN = r"^(active|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$"


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
    base_version: str | None = Field(
        None, pattern=VERSION_PATTERN,
        description="Fine-tune this published version ('active' or a version id) on the "
        "datasets: training starts from its whole network, its image size and preprocessing "
        "are inherited, and the datasets must hold every one of its classes. Defaults "
        "change to suit a fine-tune: " + ", ".join(
            f"{name} {value}" for name, value in FINE_TUNE_DEFAULTS.items()) + ".")
    replay_fraction: float = Field(
        0.0, ge=0, le=0.9,
        description="With base_version: the share of training images drawn from the parent's "
        "own training split (where its datasets are still stored), against forgetting.")
    epochs: int = Field(20, ge=1, le=500, description="Epochs of the head on the frozen base "
                        "(of the whole network from a random start or base_version).")
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
    equalize: Equalization = Field(
        "none", description="Contrast equalization before resizing, applied at serving too; "
        "reduces differences between sources.")
    crop_border: float = Field(0.0, ge=0, le=MAX_CROP_BORDER, description=(
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
        "images: one fitted on a few dozen refuses some unseen films of its own source. A "
        "version without a gate answers every image.")
    activate: Literal["if_better", "always", "never"] = Field(
        "if_better",
        description="'if_better': become active only if not worse than the active version on "
        "the promotion metric (CXR_PROMOTION_METRIC, within CXR_PROMOTION_MARGIN) on this "
        "version's test split, and better than chance on it; else published as a candidate. "
        "'always' or 'never' decide alone.")

    @model_validator(mode="after")
    def _fine_tune_defaults(self) -> TrainingParams:
        # Only where the request left a field out: what it names is kept, and a stored
        # request (every field named) reads back as it was run.
        if self.base_version is not None:
            if "base_weights" in self.model_fields_set and self.base_weights != "none":
                raise ValueError("base_weights does not apply with base_version: a fine-tune "
                                 "starts from that version's own weights")
            for name, value in FINE_TUNE_DEFAULTS.items():
                if name not in self.model_fields_set:
                    setattr(self, name, value)
        elif self.replay_fraction:
            raise ValueError("replay_fraction needs base_version: it replays the parent's "
                             "training images")
        return self

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
        tuned = self.fine_tune and self.base_weights != "none" and self.base_version is None
        return self.epochs + (self.fine_tune_epochs if tuned else 0)
