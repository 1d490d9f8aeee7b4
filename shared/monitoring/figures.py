"""The figures the service shows about itself, from the prediction log: a version's accuracy
on the answers the reading room labelled (live figures), and a shadow version against the
active one on the same images (the shadow report). Computed by ``shared.monitoring.live`` and
``shared.monitoring.shadow_report``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.manifest import PairedComparison


class Proportion(BaseModel):
    """``hits`` of ``total``, with a 95% Wilson interval (None while total is 0)."""

    hits: int
    total: int
    value: float | None = None
    low: float | None = None
    high: float | None = None


class LiveFigures(BaseModel):
    """A version on the answers it gave in service that were then labelled."""

    answers: int = Field(description="Answers it gave within the log's retention.")
    labelled: int = Field(description="Of those, how many the reading room labelled.")
    accuracy: Proportion = Field(description="Labelled answers it got right.")
    per_class: dict[str, Proportion] = Field(
        description="For each confirmed class, the share it called that class (recall).")
    reliable_right: Proportion = Field(
        description="Of its labelled answers marked reliable, how many were right.")
    reliable_rate: Proportion = Field(
        description="Of its labelled answers, how many it marked reliable.")


class ShadowSide(BaseModel):
    """One side of a shadow comparison, on the images both scored."""

    versions: list[str] = Field(description="The version(s) that gave these answers.")
    labels: dict[str, int] = Field(description="How often it answered each class.")
    reliable_rate: float | None = None
    shifted_rate: float | None = None
    accuracy: Proportion | None = Field(None, description="On the labelled images.")


class ShadowReport(BaseModel):
    """A shadow version against the active one on the same live images."""

    version: str
    current: bool = Field(description="Whether it is the shadow now.")
    loaded: bool = Field(description="Whether this API process has it loaded and scoring.")
    load_error: str | None = Field(None, description="Why it is not scoring, when it is not.")
    seen: int = 0
    dropped: int = 0
    failed: int = 0
    last_error: str | None = None
    images: int = Field(0, description="Images with both answers, within the log's retention.")
    agreement: float | None = Field(None, description="Share of images with the same label.")
    matrix: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Active label -> shadow label -> images.")
    active: ShadowSide | None = None
    shadow: ShadowSide | None = None
    labelled: int = 0
    paired: PairedComparison | None = Field(
        None, description="On the labelled images: the shadow (first) against the active "
        "answers (second), with the paired bootstrap interval of the difference.")
