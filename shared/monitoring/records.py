"""The typed records of the prediction log and the audit trail, shared by the API (which
writes and reads them) and the worker (which audits what it publishes and prunes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

# Who sent the image: the web page, the CLI, another client of POST /predict, or the Open
# Inference Protocol's infer route.
PredictionSource = Literal["page", "cli", "api", "v2"]
SOURCES: tuple[PredictionSource, ...] = ("page", "cli", "api", "v2")


class ConfirmedLabel(BaseModel):
    """The class the reading room confirmed for an answered image."""

    label: str = Field(description="One of the answering version's classes.")
    by: str = Field(description="The name of the key that labelled it.")
    role: str
    at: datetime


class ShadowAnswer(BaseModel):
    """What the shadow version answered for the same image, scored after the answer was sent."""

    version: str
    label: str
    probabilities: dict[str, float]
    reliable: bool
    shifted: bool | None = Field(None, description="Its distribution-shift flag, when scored.")


class LoggedPrediction(BaseModel):
    """One answered image, as the prediction log keeps it."""

    prediction_id: str
    time: datetime
    version: str
    label: str = Field(description="The version's answer (the most probable class).")
    probabilities: dict[str, float]
    reliable: bool
    reasons: list[str] = Field(default_factory=list)
    shift_score: float | None = None
    shifted: bool | None = None
    image_sha256: str
    source: PredictionSource
    image_kept: bool = False
    request_id: str | None = None
    confirmed: ConfirmedLabel | None = None
    shadow: ShadowAnswer | None = None

    @property
    def right(self) -> bool | None:
        """Whether the answer matched the confirmed label; None while unlabelled."""
        return None if self.confirmed is None else self.confirmed.label == self.label


class PredictionQuery(BaseModel):
    """Filters of the prediction log; every one given must hold. Newest first."""

    version: str | None = None
    labelled: bool | None = None
    reliable: bool | None = None
    since: datetime | None = None
    shadow: str | None = Field(None, description="Only images this shadow version scored.")
    limit: int | None = Field(100, ge=1, description="None: every matching record.")


class ShadowCounts(BaseModel):
    """How a shadow version kept up, across every API replica."""

    seen: int = Field(0, description="Images the shadow scored.")
    dropped: int = Field(0, description="Images dropped because its queue was full.")
    failed: int = Field(0, description="Images it failed to score.")
    last_error: str | None = None


AuditOutcome = Literal["ok", "refused", "failed"]


class AuditRecord(BaseModel):
    """One change, or one refused attempt at a change: who, what, on what, and how it ended.
    The key's name and role, never the key."""

    time: datetime
    actor: str | None = Field(description="The key's name; None when no known key was sent.")
    role: str | None = None
    action: str = Field(description="e.g. dataset.upload, retrain, activate, label.")
    target: str | None = Field(None, description="The version, dataset, job or prediction.")
    outcome: AuditOutcome
    status: int | None = Field(None, description="The HTTP status of the answer, if any.")
    error: str | None = Field(None, description="The error code of a refusal or failure.")
    request_id: str | None = None
    detail: str | None = Field(None, description="e.g. the job a retrain queued.")


class AuditQuery(BaseModel):
    """Filters of the audit trail; every one given must hold. Newest first."""

    action: str | None = None
    actor: str | None = None
    target: str | None = None
    outcome: AuditOutcome | None = None
    since: datetime | None = None
    limit: int | None = Field(200, ge=1)
