"""The audit trail: every change and every refused attempt at one, appended to a store beside
the job store (Redis, else SQLite in CXR_STATE_DIR) and written as a JSON log line
(logger ``cxr.audit``); records older than CXR_AUDIT_DAYS are pruned."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

from shared.monitoring.records import AuditQuery, AuditRecord


class AuditStore(ABC):
    @abstractmethod
    def append(self, record: AuditRecord) -> None:
        """Store one record (and log it as a JSON line)."""

    @abstractmethod
    def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching every filter given, newest first, at most ``query.limit``."""

    @abstractmethod
    def prune(self, before: datetime) -> int:
        """Remove the records older than ``before``; returns how many."""
