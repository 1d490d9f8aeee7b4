"""When an answer is not a finding: the per-version record and the rule that reads it.

An answer is unreliable when the image is unlike the training images (``shifted``), when its
top calibrated probability is below the version's threshold (``low_confidence``: fitted on the
validation split to keep a stated share of answers), when the version itself is no better than
chance on its test split (its balanced accuracy interval includes 1 / classes), or when the
gate doubts it is a chest radiograph and is set to warn rather than refuse.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.schemas import UnreliableReason


class RiskCoveragePoint(BaseModel):
    coverage: float = Field(description="Share of answers kept, most confident first.")
    accuracy: float
    balanced_accuracy: float | None = None


class ReliableClass(BaseModel):
    """One true class of a set: its recall over all answers and over those marked reliable
    (the class's coverage is ``reliable / images``)."""

    images: int
    reliable: int = Field(description="Images of the class whose answer was marked reliable.")
    recall: float | None = Field(None, description="Share of the class's images answered "
                                 "with the class, all answers.")
    reliable_recall: float | None = Field(None, description="The same over the answers "
                                          "marked reliable; None when none was.")


class ReliableSubset(BaseModel):
    """How the answers marked reliable on one image set did, beside all of them."""

    images: int
    coverage: float = Field(description="Share of the set's answers marked reliable.")
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    accuracy_all: float | None = None
    balanced_accuracy_all: float | None = None
    flagged_shift: float | None = Field(None, description="Share flagged as shifted.")
    risk_coverage: list[RiskCoveragePoint] = Field(default_factory=list)
    per_class: dict[str, ReliableClass] = Field(
        default_factory=dict, description="By true class, each class with images in the set.")


class ReliabilityRecord(BaseModel):
    """What a version records to mark its own answers (``reliability`` in the manifest)."""

    confidence_threshold: float | None = Field(
        description="Top calibrated probability below which an answer is low_confidence.")
    confidence_coverage: float = Field(
        description="Share of validation answers the threshold keeps.")
    chance: float = Field(description="1 / number of classes.")
    balanced_accuracy_ci: list[float] | None = Field(
        description="95% bootstrap interval of the test balanced accuracy.")
    better_than_chance: bool = Field(
        description="The interval lies above chance; false also when it is undefined.")
    test: ReliableSubset | None = None


def above_chance(interval: list[float] | None, chance: float) -> bool:
    """Whether a balanced accuracy interval lies above chance; False when it is undefined."""
    return interval is not None and interval[0] > chance


def reasons(top_probability: float, shifted: bool,
            record: ReliabilityRecord | None) -> list[UnreliableReason]:
    """Why an answer is not a finding; empty when it may be read as one."""
    found: list[UnreliableReason] = []
    if shifted:
        found.append("shifted")
    if record is not None:
        if record.confidence_threshold is not None and \
                top_probability < record.confidence_threshold:
            found.append("low_confidence")
        if not record.better_than_chance:
            found.append("version_not_better_than_chance")
    return found
