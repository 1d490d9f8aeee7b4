"""What the API shows of the prediction log, the audit trail and deletions: the models views
with each version's live figures (extending ``shared.manifest``'s, which the figures module
itself imports), and the bodies of the predictions, audit and deletion routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from shared.manifest import Manifest, ModelList, ModelSummary, VersionDetail
from shared.monitoring.figures import LiveFigures
from shared.monitoring.live import live_by_version, live_figures
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.records import AuditRecord, LoggedPrediction, PredictionQuery

LIVE = ("Its figures on the answers it gave in service that the reading room labelled; null "
        "when it gave none within the log's retention, or the log is unreachable.")


class MonitoredSummary(ModelSummary):
    live: LiveFigures | None = Field(None, description=LIVE)
    shadow: bool = Field(False, description="Whether it is the shadow version now.")


class MonitoredList(ModelList):
    versions: list[MonitoredSummary]  # type: ignore[assignment]  # narrowed, still a summary
    shadow: str | None = Field(None, description="The shadow version, scored beside the "
                               "active one on live traffic.")


class MonitoredVersion(VersionDetail):
    live: LiveFigures | None = Field(None, description=LIVE)
    shadow: bool = Field(False, description="Whether it is the shadow version now.")


def live_of(log: PredictionLog, manifests: Sequence[Manifest]) -> dict[str, LiveFigures]:
    """The live figures of each version that answered within the log's retention: one query
    of the labelled answers, and one count per version."""
    labelled = live_by_version(log.query(PredictionQuery(labelled=True, limit=None)))
    figures = {}
    for manifest in manifests:
        answers = log.count(manifest.version)
        if answers or manifest.version in labelled:
            figures[manifest.version] = live_figures(labelled.get(manifest.version, []),
                                                     answers, manifest.classes)
    return figures


def live_one(log: PredictionLog, manifest: Manifest) -> LiveFigures | None:
    """One version's live figures (None when it gave no answer within the retention)."""
    answers = log.count(manifest.version)
    records = log.query(PredictionQuery(version=manifest.version, labelled=True, limit=None))
    return live_figures(records, answers, manifest.classes) if answers or records else None


class PredictionList(BaseModel):
    predictions: list[LoggedPrediction] = Field(description="Newest first.")


class LabelRequest(BaseModel):
    label: str = Field(min_length=1, max_length=128, description="The confirmed class: one "
                       "of the answering version's classes, in any spelling of it "
                       "('VIRAL_PNEUMONIA' for 'Viral Pneumonia').")


class LabelledPrediction(LoggedPrediction):
    filed_into: str | None = Field(None, description="The dataset its kept image was filed "
                                   "into under the confirmed class; null when not kept.")


class AuditList(BaseModel):
    records: list[AuditRecord] = Field(description="Newest first.")


class Deleted(BaseModel):
    deleted: Literal["dataset", "version"]
    name: str
