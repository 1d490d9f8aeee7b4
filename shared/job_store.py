"""The job store: state and progress of retrain jobs, shared by the API and the worker.

Celery carries the work; this store is the truth about each job (Celery's result backend
cannot list jobs or carry a cancellation). It lives next to the broker: Redis when
CXR_BROKER_URL is Redis, else a SQLite file in CXR_STATE_DIR. Every change is an atomic
read-modify-write, so a cancel and a worker starting the job cannot both win. The store
reads time from its clock alone, so tests can move it instead of sleeping.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError, ValidationInfo, field_validator

from shared.config import Settings
from shared.errors import JobNotCancellable, JobNotFound
from shared.schemas import EpochPoint, EvaluationParams, JobProgress, JobState, JobStatus
from shared.training_params import TrainingParams

Mutation = Callable[["JobRecord"], None]
Clock = Callable[[], datetime]
JobParams = TrainingParams | EvaluationParams
_PARAMS_OF_KIND: dict[str, type[JobParams]] = {"train": TrainingParams,
                                               "evaluate": EvaluationParams}


def utc_now() -> datetime:
    """The store's clock outside tests: aware UTC wall time, comparable across processes."""
    return datetime.now(UTC)


class JobRecord(JobStatus):
    """What is stored: the public status plus the request and the liveness fields."""

    # None: stored by another version of the service, with parameters this one cannot read
    # (its status still lists; a worker fails the job rather than guess).
    params: JobParams | None
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    attempts: int = 0

    @field_validator("params", mode="before")
    @classmethod
    def _params_of_kind(cls, value: Any, info: ValidationInfo) -> Any:
        # The job's kind names the type, not the shape of the JSON (stored as a plain object).
        try:
            return _PARAMS_OF_KIND[info.data.get("kind", "train")].model_validate(value)
        except ValidationError:
            return None

    def status(self) -> JobStatus:
        return JobStatus.model_validate(self.model_dump(include=set(JobStatus.model_fields)))


class JobStore(ABC):
    """State transitions of jobs; subclasses provide storage and an atomic update."""

    def __init__(self, heartbeat_timeout_s: float, *, clock: Clock = utc_now) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.clock = clock

    @abstractmethod
    def _insert(self, record: JobRecord) -> None: ...

    @abstractmethod
    def _load(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    def _update(self, job_id: str, mutate: Mutation) -> JobRecord:
        """Apply ``mutate`` to the stored record atomically and return the result."""

    @abstractmethod
    def _recent_ids(self, limit: int) -> list[str]: ...

    def create(self, job_id: str, params: JobParams,
               request_id: str | None = None) -> JobStatus:
        if isinstance(params, EvaluationParams):
            kind, epochs, version = "evaluate", 1, params.version
        else:
            kind, epochs, version = "train", params.total_epochs, None
        record = JobRecord(
            job_id=job_id, kind=kind, state=JobState.queued, dataset=params.dataset,
            created_at=self.clock(), params=params,
            progress=JobProgress(epochs=epochs), model_version=version, request_id=request_id,
        )
        self._insert(record)
        return record.status()

    def get(self, job_id: str) -> JobStatus:
        return self._checked(job_id).status()

    def record(self, job_id: str) -> JobRecord:
        return self._checked(job_id)

    def recent(self, limit: int = 50) -> list[JobStatus]:
        return [self._checked(job_id).status() for job_id in self._recent_ids(limit)]

    def _checked(self, job_id: str) -> JobRecord:
        record = self._load(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id!r}")
        if self._silent(record, self.heartbeat_timeout_s):
            record = self._update(job_id, self._fail_if_lost)
        return record

    def _silent(self, record: JobRecord, limit_s: float | None) -> bool:
        """Whether a running job's worker has reported nothing for over ``limit_s``: the one
        rule of liveness, for declaring a job lost and for taking it over."""
        if record.state != JobState.running or limit_s is None:
            return False
        last = record.heartbeat_at or record.started_at or record.created_at
        return (self.clock() - last).total_seconds() > limit_s

    def _fail_if_lost(self, record: JobRecord) -> None:
        if self._silent(record, self.heartbeat_timeout_s):
            record.state = JobState.failed
            record.error = (f"worker lost: no progress reported for over "
                            f"{self.heartbeat_timeout_s:.0f} s")
            record.finished_at = self.clock()

    def start(self, job_id: str, takeover_after_s: float | None = None,
              max_attempts: int = 1) -> bool:
        """queued -> running, or take over a running job whose worker has been silent for
        ``takeover_after_s`` (it died; the job resumes from its checkpoint) while attempts
        remain. False when the job ended, was cancelled, or is alive elsewhere."""
        started: list[bool] = []

        def mutate(record: JobRecord) -> None:
            now, dead = self.clock(), self._silent(record, takeover_after_s)
            if dead and record.attempts >= max_attempts:
                record.state, record.finished_at = JobState.failed, now
                record.error = f"worker lost {record.attempts} time(s); not retried again"
            started[:] = [record.state == JobState.queued or (
                dead and record.state == JobState.running)]
            if started[0]:
                record.state, record.attempts = JobState.running, record.attempts + 1
                record.started_at = record.started_at or now
                record.heartbeat_at = now

        self._update(job_id, mutate)
        # Decided inside the atomic update: two tasks for one job cannot both start it.
        return started[0]

    def report_progress(self, job_id: str, progress: JobProgress) -> bool:
        """Record an epoch's progress; returns whether cancellation was requested."""
        def mutate(record: JobRecord) -> None:
            if record.state == JobState.running:
                # a resumed run redoes the epochs after its checkpoint: theirs replace
                history = [p for p in record.progress.history if p.epoch < progress.epoch]
                if progress.last is not None:
                    history.append(EpochPoint(epoch=progress.epoch, phase=progress.phase,
                                              **progress.last.model_dump()))
                record.progress = progress.model_copy(update={"history": history})
                record.heartbeat_at = self.clock()

        return self._update(job_id, mutate).cancel_requested

    def heartbeat(self, job_id: str) -> bool:
        """Mark the job alive; returns whether cancellation was requested."""
        def mutate(record: JobRecord) -> None:
            if record.state == JobState.running:
                record.heartbeat_at = self.clock()

        return self._update(job_id, mutate).cancel_requested

    def finish(self, job_id: str, state: JobState, *, model_version: str | None = None,
               error: str | None = None) -> JobStatus:
        """End a job once; a job that already ended keeps its first outcome."""
        def mutate(record: JobRecord) -> None:
            if not record.state.finished:
                record.state, record.model_version, record.error = state, model_version, error
                record.finished_at = self.clock()

        return self._update(job_id, mutate).status()

    def cancel(self, job_id: str) -> JobStatus:
        """A queued job is cancelled at once; a running one is asked to stop."""
        self._checked(job_id)

        def mutate(record: JobRecord) -> None:
            if record.state.finished:
                raise JobNotCancellable(f"job {job_id} already {record.state.value}")
            record.cancel_requested = True
            if record.state == JobState.queued:
                record.state, record.finished_at = JobState.cancelled, self.clock()

        return self._update(job_id, mutate).status()


class RedisJobStore(JobStore):
    PREFIX = "cxr:job:"
    INDEX = "cxr:jobs"

    def __init__(self, client: redis.Redis, heartbeat_timeout_s: float, *,
                 clock: Clock = utc_now) -> None:
        super().__init__(heartbeat_timeout_s, clock=clock)
        self.client = client

    def _insert(self, record: JobRecord) -> None:
        if not self.client.set(self.PREFIX + record.job_id, record.model_dump_json(), nx=True):
            raise ValueError(f"job {record.job_id} already exists")
        self.client.zadd(self.INDEX, {record.job_id: record.created_at.timestamp()})

    def _load(self, job_id: str) -> JobRecord | None:
        raw = self.client.get(self.PREFIX + job_id)
        return None if raw is None else JobRecord.model_validate_json(raw)

    def _update(self, job_id: str, mutate: Mutation) -> JobRecord:
        key = self.PREFIX + job_id
        result: list[JobRecord] = []

        def transaction(pipe: Any) -> None:
            raw = pipe.get(key)
            if raw is None:
                raise JobNotFound(f"no job {job_id!r}")
            record = JobRecord.model_validate_json(raw)
            mutate(record)
            pipe.multi()
            pipe.set(key, record.model_dump_json())
            result[:] = [record]

        self.client.transaction(transaction, key)
        return result[0]

    def _recent_ids(self, limit: int) -> list[str]:
        return [i.decode() if isinstance(i, bytes) else str(i)
                for i in self.client.zrevrange(self.INDEX, 0, limit - 1)]


class SqliteJobStore(JobStore):
    def __init__(self, path: Path, heartbeat_timeout_s: float, *,
                 clock: Clock = utc_now) -> None:
        super().__init__(heartbeat_timeout_s, clock=clock)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with closing(self._connect()) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, "
                         "created REAL NOT NULL, doc TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def _insert(self, record: JobRecord) -> None:
        with closing(self._connect()) as conn:
            conn.execute("INSERT INTO jobs VALUES (?, ?, ?)",
                         (record.job_id, record.created_at.timestamp(), record.model_dump_json()))

    def _load(self, job_id: str) -> JobRecord | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else JobRecord.model_validate_json(row[0])

    def _update(self, job_id: str, mutate: Mutation) -> JobRecord:
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobNotFound(f"no job {job_id!r}")
                record = JobRecord.model_validate_json(row[0])
                mutate(record)
                conn.execute("UPDATE jobs SET doc = ? WHERE id = ?",
                             (record.model_dump_json(), job_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return record

    def _recent_ids(self, limit: int) -> list[str]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT id FROM jobs ORDER BY created DESC LIMIT ?",
                                (limit,)).fetchall()
        return [r[0] for r in rows]


def redis_client(settings: Settings) -> redis.Redis:
    """A client of the broker's Redis, for the stores beside it (jobs, the prediction log, the
    audit trail): a store that does not answer fails the request, not hangs it."""
    return redis.Redis.from_url(settings.effective_broker_url, socket_timeout=5,
                                socket_connect_timeout=2)


def open_job_store(settings: Settings, *, clock: Clock = utc_now) -> JobStore:
    """The store that sits beside the configured broker."""
    if settings.uses_redis:
        return RedisJobStore(redis_client(settings), settings.job_heartbeat_timeout_s,
                             clock=clock)
    return SqliteJobStore(settings.state_dir / "jobs.sqlite", settings.job_heartbeat_timeout_s,
                          clock=clock)
