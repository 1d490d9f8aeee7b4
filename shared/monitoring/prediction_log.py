"""The prediction log: every answered image, its confirmed label once the reading room gives
one, and the shadow's answer for it. Redis where the broker is Redis (shared by every API
replica, ``prediction_log_redis``), else a SQLite file in CXR_STATE_DIR
(``prediction_log_sqlite``); records older than CXR_PREDICTION_LOG_DAYS are pruned.

A store reads time from its clock alone (tests move it instead of sleeping): a record older
than the retention is invisible at once, and gone from storage once ``prune`` runs (in Redis
its key also expires by itself).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta

from shared.errors import PredictionNotFound
from shared.job_store import Clock, utc_now
from shared.monitoring.records import (
    ConfirmedLabel,
    LoggedPrediction,
    PredictionQuery,
    ShadowAnswer,
    ShadowCounts,
)


class PredictionLog(ABC):
    """What the API and the tests use, whatever the store."""

    def __init__(self, retention_days: float, *, clock: Clock = utc_now) -> None:
        self.retention = timedelta(days=retention_days)
        self.clock = clock

    @abstractmethod
    def add(self, records: Sequence[LoggedPrediction]) -> None:
        """Append answered images (one round trip for the lot)."""

    @abstractmethod
    def get(self, prediction_id: str) -> LoggedPrediction:
        """One record (PredictionNotFound when unknown or pruned)."""

    @abstractmethod
    def confirm(self, prediction_id: str, confirmed: ConfirmedLabel) -> LoggedPrediction:
        """Record (or replace) the confirmed label; returns the updated record
        (PredictionNotFound when unknown or pruned)."""

    @abstractmethod
    def add_shadow(self, prediction_id: str, answer: ShadowAnswer) -> None:
        """Record the shadow's answer for an image (nothing when the record is gone)."""

    @abstractmethod
    def query(self, query: PredictionQuery) -> list[LoggedPrediction]:
        """Records matching every filter given, newest first, at most ``query.limit``."""

    @abstractmethod
    def count(self, version: str) -> int:
        """How many answers a version gave, within the retention."""

    @abstractmethod
    def count_shadow(self, version: str, *, seen: int = 0, dropped: int = 0, failed: int = 0,
                     error: str | None = None) -> None:
        """Add to a shadow version's counters (and keep its last error, when given)."""

    @abstractmethod
    def shadow_counts(self, version: str) -> ShadowCounts:
        """A shadow version's counters; zeros for one never shadowed."""

    @abstractmethod
    def prune(self, before: datetime) -> list[str]:
        """Remove the records older than ``before``; returns their ids (kept images go too)."""

    def _floor(self, since: datetime | None = None) -> datetime:
        """The oldest time a reader may see: the retention's edge, or ``since`` if later."""
        edge = self.clock() - self.retention
        return edge if since is None else max(edge, since)

    def _visible(self, record: LoggedPrediction) -> LoggedPrediction:
        if record.time < self._floor():
            raise PredictionNotFound(f"prediction {record.prediction_id!r} is past retention")
        return record


def not_found(prediction_id: str) -> PredictionNotFound:
    return PredictionNotFound(f"no prediction {prediction_id!r}")
