"""Running a job, whatever it does: claimed once, kept alive by one heartbeat, every outcome
recorded in the store. The plain functions behind the Celery tasks; what a retrain job does
is ``worker.runner.retrain``."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from shared.config import Settings
from shared.datasets import combine, dataset_path, discover
from shared.errors import CxrError, JobCancelled, JobNotFound, JobParamsUnreadable
from shared.job_store import JobStore, open_job_store
from shared.logs import log_context
from shared.registry import open_registry
from shared.schemas import EvaluationParams, JobProgress, JobState, JobStatus
from shared.training_params import TrainingParams
from worker.context import BatchProgress, JobContext
from worker.evaluation.external import evaluate_external
from worker.runner import job_metrics as metrics
from worker.runner import retrain
from worker.training import checkpoints

log = logging.getLogger(__name__)
Params = TypeVar("Params", TrainingParams, EvaluationParams)


class StoreReporter:
    """Reports progress to the job store; knows of a cancellation from the store's answers
    to its progress reports and to the job's heartbeat."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.cancelled = threading.Event()

    def batch_end(self, progress: BatchProgress) -> None:
        """Nothing: the store keeps epochs; a batch's progress is for a console."""

    def phase(self, name: str, done: int, total: int) -> None:
        if done == 0:  # the log says where a job is after training, not every step
            log.info("%s started", name, extra={"phase": name, "steps": total})

    def epoch_end(self, progress: JobProgress) -> bool:
        metrics.epoch_done()
        last = progress.last.model_dump(exclude_none=True) if progress.last else {}
        log.info("epoch %d/%d done", progress.epoch, progress.epochs,
                 extra={"epoch": progress.epoch, "epochs": progress.epochs,
                        "phase": progress.phase, **last})
        if self.store.report_progress(self.job_id, progress):
            self.cancelled.set()
        return self.cancel_requested()

    def cancel_requested(self) -> bool:
        return self.cancelled.is_set()

    def stop_if_cancelled(self, before: str) -> None:
        """Raise JobCancelled if the job was asked to stop, asking the store now rather than
        going by the heartbeat's last answer: the check before what a cancel cannot undo."""
        if self.cancel_requested() or self.store.record(self.job_id).cancel_requested:
            self.cancelled.set()
            raise JobCancelled(f"cancelled before {before}")


@contextmanager
def heartbeat(reporter: StoreReporter, every_s: float) -> Iterator[None]:
    """The job's one liveness loop: keeps it visibly alive for as long as this process
    works on it, and relays a cancellation to the reporter within ``every_s``."""
    stop = threading.Event()
    store, job_id = reporter.store, reporter.job_id

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                if store.heartbeat(job_id):
                    reporter.cancelled.set()
            except Exception:  # a store outage must not kill the training
                log.warning("heartbeat for job %s failed", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def claim(store: JobStore, job_id: str, settings: Settings) -> bool:
    """Start a queued job, or take over one whose worker died (a redelivered task): its
    heartbeat must stay silent for CXR_JOB_TAKEOVER_AFTER_S first, so a live job is never
    run twice."""
    beat = settings.job_heartbeat_interval_s
    deadline = time.monotonic() + settings.job_takeover_after_s + 4 * beat
    while True:
        if store.start(job_id, settings.job_takeover_after_s, settings.job_max_attempts):
            return True
        if store.get(job_id).state != JobState.running or time.monotonic() > deadline:
            return False
        time.sleep(beat)


def _checkpoint_dir(settings: Settings, job_id: str) -> Path:
    return settings.state_dir / "checkpoints" / job_id


def _temp_root(settings: Settings) -> Path:
    return settings.state_dir / "tmp"


@contextmanager
def job_temp_dir(settings: Settings, job_id: str) -> Iterator[Path]:
    """The job's temporary files (TensorFlow's autograph modules among them, which it
    deletes only at a normal exit, and a pool process ends with os._exit) in a folder of the
    job's own, removed when the job ends; one a killed process leaves is swept at the next
    worker start."""
    folder = _temp_root(settings) / job_id
    folder.mkdir(parents=True, exist_ok=True)
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(folder, ignore_errors=True)


def sweep_checkpoints(settings: Settings, store: JobStore | None = None) -> list[str]:
    """At worker start: drop checkpoints of jobs that ended (lost with their worker, or
    unknown); a job that can still be taken over keeps its own."""
    store = store or open_job_store(settings)

    def is_over(job_id: str) -> bool:
        try:
            return store.get(job_id).state.finished
        except JobNotFound:
            return True

    removed = checkpoints.sweep(settings.state_dir / "checkpoints", is_over)
    checkpoints.sweep(_temp_root(settings), is_over)
    if removed:
        log.info("removed checkpoints of %d finished job(s)", len(removed))
    return removed


def run_job(job_id: str, settings: Settings, store: JobStore | None = None) -> JobState:
    """Train and publish for a queued job; every outcome ends in the store, never mid-way."""
    store = store or open_job_store(settings)
    checkpoint_dir = _checkpoint_dir(settings, job_id)

    def work(reporter: StoreReporter) -> str:
        try:
            return _train_and_publish(reporter, settings, checkpoint_dir)
        finally:
            # Not reached when the process dies: only a lost worker leaves a checkpoint.
            checkpoints.clear(checkpoint_dir)

    return _run(store, job_id, settings, work, kind="train")


def run_evaluation(job_id: str, settings: Settings, store: JobStore | None = None) -> JobState:
    """Evaluate a version on a stored dataset and keep the report beside the registry."""
    store = store or open_job_store(settings)

    def work(reporter: StoreReporter) -> str:
        params = _params(store, job_id, EvaluationParams)
        registry = open_registry(settings)
        dataset = discover(dataset_path(settings.data_dir, params.dataset), min_classes=1)
        report = evaluate_external(registry, params.version, dataset, params.dataset,
                                   settings.max_image_pixels, reporter, params.compare)
        reporter.stop_if_cancelled("storing the report")
        registry.save_evaluation(params.version, report)
        return params.version

    return _run(store, job_id, settings, work, kind="evaluate")


def _params(store: JobStore, job_id: str, kind: type[Params]) -> Params:
    """The job's parameters, if they are those of a ``kind`` job that this version reads."""
    params = store.record(job_id).params
    if not isinstance(params, kind):
        raise JobParamsUnreadable(f"job {job_id} has no {kind.__name__} this version of the "
                                  "service can read (queued by another version?)")
    return params


def _run(store: JobStore, job_id: str, settings: Settings,
         work: Callable[[StoreReporter], str], kind: str) -> JobState:
    """Claim the job and run ``work``, with every log line tagged by the job and the request
    that queued it; the outcome is logged and counted."""
    record = store.record(job_id)
    with log_context(job=job_id, request=record.request_id):
        if not claim(store, job_id, settings):
            state = store.get(job_id).state
            log.info("job %s is %s elsewhere or over; skipping", job_id, state.value)
            if state.finished:  # redelivered after it was declared lost
                checkpoints.clear(_checkpoint_dir(settings, job_id))
            return state
        log.info("job started", extra={"kind": kind, "dataset": record.dataset})
        started = time.monotonic()
        with job_temp_dir(settings, job_id):
            ended = _work(store, job_id, work, settings.job_heartbeat_interval_s)
        seconds = time.monotonic() - started
        _log_end(ended, kind, seconds)
        metrics.job_ended(kind, ended.state.value, seconds)
        return ended.state


def _log_end(ended: JobStatus, kind: str, seconds: float) -> None:
    """One line: how the job ended and, for a failure, why (a handled one has no traceback;
    an unexpected one's was logged where it was caught)."""
    failed = ended.state == JobState.failed
    log.log(logging.WARNING if failed else logging.INFO,
            "job failed: %s" if failed else "job %s", ended.error if failed else ended.state.value,
            extra={"kind": kind, "state": ended.state.value,
                   "model_version": ended.model_version, "error": ended.error,
                   "duration_s": round(seconds, 1)})


def _work(store: JobStore, job_id: str, work: Callable[[StoreReporter], str],
          heartbeat_s: float) -> JobStatus:
    """Every outcome ends in the store: succeeded, cancelled or failed."""
    reporter = StoreReporter(store, job_id)
    try:
        with heartbeat(reporter, heartbeat_s):
            version = work(reporter)
    except JobCancelled:
        return store.finish(job_id, JobState.cancelled, error="cancelled by request")
    except CxrError as exc:
        return store.finish(job_id, JobState.failed, error=f"{exc.code}: {exc.message}")
    except Exception as exc:  # the job must end failed, whatever went wrong
        log.exception("job %s failed", job_id)
        return store.finish(job_id, JobState.failed,
                            error=f"internal_error: {type(exc).__name__}: {exc}")
    return store.finish(job_id, JobState.succeeded, model_version=version)


def _train_and_publish(reporter: StoreReporter, settings: Settings,
                       checkpoint_dir: Path) -> str:
    params = _params(reporter.store, reporter.job_id, TrainingParams)
    dataset = combine([(name, discover(dataset_path(settings.data_dir, name)))
                       for name in (params.dataset, *params.datasets)])
    return retrain.train_and_publish(dataset, params,
                                     JobContext(settings, reporter, checkpoint_dir))
