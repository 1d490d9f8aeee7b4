"""The prediction log in a SQLite file in CXR_STATE_DIR (no Redis broker): one row per record,
the filtered columns beside its JSON, and a row of counters per shadow version."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.errors import PredictionNotFound
from shared.job_store import Clock, utc_now
from shared.monitoring.prediction_log import PredictionLog, not_found
from shared.monitoring.records import (
    ConfirmedLabel,
    LoggedPrediction,
    PredictionQuery,
    ShadowAnswer,
    ShadowCounts,
)


class SqlitePredictionLog(PredictionLog):
    """A connection per call, as SqliteJobStore: WAL, so that readers never wait for the
    writer, and each change one IMMEDIATE transaction."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS predictions (id TEXT PRIMARY KEY, time REAL NOT NULL, "
        "version TEXT NOT NULL, labelled INTEGER NOT NULL, reliable INTEGER NOT NULL, "
        "shadow_version TEXT, doc TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time)",
        "CREATE INDEX IF NOT EXISTS predictions_version ON predictions (version, time)",
        "CREATE INDEX IF NOT EXISTS predictions_shadow ON predictions (shadow_version, time)",
        "CREATE TABLE IF NOT EXISTS shadow_counts (version TEXT PRIMARY KEY, "
        "seen INTEGER NOT NULL, dropped INTEGER NOT NULL, failed INTEGER NOT NULL, "
        "last_error TEXT, updated REAL NOT NULL)",
    )

    def __init__(self, path: Path, retention_days: float, *, clock: Clock = utc_now) -> None:
        super().__init__(retention_days, clock=clock)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._transaction() as conn:
            for statement in self.SCHEMA:
                conn.execute(statement)
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _row(record: LoggedPrediction) -> tuple[Any, ...]:
        return (record.prediction_id, record.time.timestamp(), record.version,
                int(record.confirmed is not None), int(record.reliable),
                None if record.shadow is None else record.shadow.version,
                record.model_dump_json())

    def add(self, records: Sequence[LoggedPrediction]) -> None:
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [self._row(r) for r in records])

    def _load(self, conn: sqlite3.Connection, prediction_id: str) -> LoggedPrediction:
        row = conn.execute("SELECT doc FROM predictions WHERE id = ?",
                           (prediction_id,)).fetchone()
        if row is None:
            raise not_found(prediction_id)
        return self._visible(LoggedPrediction.model_validate_json(row[0]))

    def get(self, prediction_id: str) -> LoggedPrediction:
        with closing(self._connect()) as conn:
            return self._load(conn, prediction_id)

    def _change(self, prediction_id: str,
                change: Callable[[LoggedPrediction], None]) -> LoggedPrediction:
        with self._transaction() as conn:
            record = self._load(conn, prediction_id)
            change(record)
            conn.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)",
                         self._row(record))
        return record

    def confirm(self, prediction_id: str, confirmed: ConfirmedLabel) -> LoggedPrediction:
        return self._change(prediction_id, lambda r: setattr(r, "confirmed", confirmed))

    def add_shadow(self, prediction_id: str, answer: ShadowAnswer) -> None:
        try:
            self._change(prediction_id, lambda r: setattr(r, "shadow", answer))
        except PredictionNotFound:
            pass  # pruned while the shadow was scoring it

    def query(self, query: PredictionQuery) -> list[LoggedPrediction]:
        where: list[str] = ["time >= ?"]
        args: list[Any] = [self._floor(query.since).timestamp()]
        for column, value in (("version", query.version), ("labelled", query.labelled),
                              ("reliable", query.reliable), ("shadow_version", query.shadow)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(int(value) if isinstance(value, bool) else value)
        with closing(self._connect()) as conn:
            rows = conn.execute(
                f"SELECT doc FROM predictions WHERE {' AND '.join(where)} "
                "ORDER BY time DESC, id DESC LIMIT ?",
                [*args, -1 if query.limit is None else query.limit]).fetchall()
        return [LoggedPrediction.model_validate_json(r[0]) for r in rows]

    def count(self, version: str) -> int:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT COUNT(*) FROM predictions WHERE version = ? AND time >= ?",
                               (version, self._floor().timestamp())).fetchone()
        return int(row[0])

    def count_shadow(self, version: str, *, seen: int = 0, dropped: int = 0, failed: int = 0,
                     error: str | None = None) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO shadow_counts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (version) DO "
                "UPDATE SET seen = seen + excluded.seen, dropped = dropped + excluded.dropped, "
                "failed = failed + excluded.failed, "
                "last_error = COALESCE(excluded.last_error, last_error), "
                "updated = excluded.updated",
                (version, seen, dropped, failed, error, self.clock().timestamp()))

    def shadow_counts(self, version: str) -> ShadowCounts:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT seen, dropped, failed, last_error FROM shadow_counts "
                               "WHERE version = ?", (version,)).fetchone()
        if row is None:
            return ShadowCounts()
        return ShadowCounts(seen=row[0], dropped=row[1], failed=row[2], last_error=row[3])

    def prune(self, before: datetime) -> list[str]:
        edge = before.timestamp()
        with self._transaction() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM predictions WHERE time < ?",
                                              (edge,))]
            conn.execute("DELETE FROM predictions WHERE time < ?", (edge,))
            conn.execute("DELETE FROM shadow_counts WHERE updated < ?", (edge,))
        return ids
