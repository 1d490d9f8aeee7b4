"""The audit trail: every change and every refused attempt at one, appended to a store beside
the job store (Redis, else SQLite in CXR_STATE_DIR) and written as a JSON log line
(logger ``cxr.audit``); records older than CXR_AUDIT_DAYS are pruned.

A record holds the key's name and role, never the key. Appending is one write (no pruning on
the way); records past the retention are invisible at once and removed by ``prune``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from shared import logs
from shared.config import Settings
from shared.job_store import Clock, redis_client, utc_now
from shared.monitoring.records import AuditOutcome, AuditQuery, AuditRecord

log = logging.getLogger("cxr.audit")


class AuditStore(ABC):
    def __init__(self, retention_days: float, *, clock: Clock = utc_now) -> None:
        self.retention = timedelta(days=retention_days)
        self.clock = clock

    def append(self, record: AuditRecord) -> None:
        """Store one record (and log it as a JSON line)."""
        # Logged first: should the store fail, the log line still tells what happened.
        log.info("audit %s %s %s", record.action, record.target or "-", record.outcome,
                 extra={"audit": record.model_dump(mode="json", exclude_none=True),
                        "request_id": record.request_id})
        self._store(record)

    @abstractmethod
    def _store(self, record: AuditRecord) -> None: ...

    @abstractmethod
    def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching every filter given, newest first, at most ``query.limit``."""

    @abstractmethod
    def prune(self, before: datetime) -> int:
        """Remove the records older than ``before``; returns how many."""

    def _floor(self, since: datetime | None) -> datetime:
        edge = self.clock() - self.retention
        return edge if since is None else max(edge, since)


def audit_now(store: AuditStore, *, actor: str | None, role: str | None, action: str,
              target: str | None, outcome: AuditOutcome, status: int | None = None,
              error: str | None = None, request_id: str | None = None,
              detail: str | None = None) -> AuditRecord:
    """Append a record stamped with the store's clock; the request id defaults to the one
    being logged (``shared.logs.log_context``)."""
    record = AuditRecord(time=store.clock(), actor=actor, role=role, action=action,
                         target=target, outcome=outcome, status=status, error=error,
                         request_id=request_id or logs.request_id.get(), detail=detail)
    store.append(record)
    return record


def _matches(record: AuditRecord, query: AuditQuery) -> bool:
    return (query.action in (None, record.action) and query.actor in (None, record.actor)
            and query.target in (None, record.target)
            and query.outcome in (None, record.outcome))


class RedisAuditStore(AuditStore):
    """One sorted set scored by time; a member is a unique prefix and the record's JSON."""

    KEY = "cxr:audit"
    # Nanoseconds of the appending process, then random: unique, and in order of appending
    # among records stamped with the same time.
    PREFIX_LENGTH = 28
    CHUNK = 500

    def __init__(self, client: redis.Redis, retention_days: float, *,
                 clock: Clock = utc_now) -> None:
        super().__init__(retention_days, clock=clock)
        self.client = client

    def _store(self, record: AuditRecord) -> None:
        prefix = f"{time.time_ns():020d}{uuid.uuid4().hex[:8]}"
        self.client.zadd(self.KEY, {prefix + record.model_dump_json(): record.time.timestamp()})

    def _record(self, member: Any) -> AuditRecord:
        return AuditRecord.model_validate_json(member[self.PREFIX_LENGTH:])

    def query(self, query: AuditQuery) -> list[AuditRecord]:
        floor = self._floor(query.since).timestamp()
        found: list[AuditRecord] = []
        offset = 0
        while query.limit is None or len(found) < query.limit:
            members = self.client.zrevrangebyscore(self.KEY, "+inf", floor, start=offset,
                                                   num=self.CHUNK)
            offset += len(members)
            records = (self._record(m) for m in members)
            found += [r for r in records if _matches(r, query)]
            if len(members) < self.CHUNK:
                break
        return found[:query.limit]

    def prune(self, before: datetime) -> int:
        return int(self.client.zremrangebyscore(self.KEY, "-inf", f"({before.timestamp()!r}"))


class SqliteAuditStore(AuditStore):
    """One row per record: the filtered columns beside the JSON, in order of appending."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "time REAL NOT NULL, action TEXT NOT NULL, actor TEXT, target TEXT, "
        "outcome TEXT NOT NULL, doc TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS audit_time ON audit (time)",
    )

    def __init__(self, path: Path, retention_days: float, *, clock: Clock = utc_now) -> None:
        super().__init__(retention_days, clock=clock)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in self.SCHEMA:
                conn.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def _store(self, record: AuditRecord) -> None:
        with closing(self._connect()) as conn:
            conn.execute("INSERT INTO audit (time, action, actor, target, outcome, doc) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (record.time.timestamp(), record.action, record.actor, record.target,
                          record.outcome, record.model_dump_json()))

    def query(self, query: AuditQuery) -> list[AuditRecord]:
        where: list[str] = ["time >= ?"]
        args: list[Any] = [self._floor(query.since).timestamp()]
        for column, value in (("action", query.action), ("actor", query.actor),
                              ("target", query.target), ("outcome", query.outcome)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        with closing(self._connect()) as conn:
            rows = conn.execute(
                f"SELECT doc FROM audit WHERE {' AND '.join(where)} "
                "ORDER BY time DESC, seq DESC LIMIT ?",
                [*args, -1 if query.limit is None else query.limit]).fetchall()
        return [AuditRecord.model_validate_json(r[0]) for r in rows]

    def prune(self, before: datetime) -> int:
        with closing(self._connect()) as conn:
            return conn.execute("DELETE FROM audit WHERE time < ?",
                                (before.timestamp(),)).rowcount


def open_audit_store(settings: Settings, *, clock: Clock = utc_now) -> AuditStore:
    """The trail that sits beside the configured broker (and the job store)."""
    if settings.uses_redis:
        return RedisAuditStore(redis_client(settings), settings.audit_days, clock=clock)
    return SqliteAuditStore(settings.state_dir / "audit.sqlite", settings.audit_days,
                            clock=clock)
