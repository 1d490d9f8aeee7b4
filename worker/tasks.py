"""Celery tasks: thin wrappers that pass ids to plain functions.

The worker's main process imports TensorFlow before its pool forks (worker.celery_app), but
runs nothing with it: the runtime starts in the pool's child, a fresh one per job. A job that
ended failed in the job store also fails its task, so that Celery's own events (and Flower)
show a failure, not a success whose result reads "failed". That failure is expected
(``Task.throws``): Celery logs it in one line without a traceback, since the job's own line
says why it failed, and an unexpected error's traceback is logged where it was caught
(worker.runner.jobs).
"""

from __future__ import annotations

import logging

from celery.signals import worker_ready

from shared.config import get_settings
from shared.schemas import JobState
from shared.task_queue import EVALUATE_TASK, TRAIN_TASK
from worker.celery_app import app

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job ended failed; the store has its error (GET /jobs/{id})."""


def _outcome(job_id: str, state: JobState) -> str:
    # Raised after the store recorded the failure: the message is acknowledged all the same
    # (task_acks_on_failure_or_timeout), so the job is not run again.
    if state == JobState.failed:
        raise JobFailed(f"job {job_id} failed; its error is in the job store")
    return state.value


@app.task(name=TRAIN_TASK, throws=(JobFailed,))
def train(job_id: str) -> str:
    """Run retrain job ``job_id``; idempotent, since a job runs only from ``queued``."""
    from worker.runner.jobs import run_job

    return _outcome(job_id, run_job(job_id, get_settings()))


@app.task(name=EVALUATE_TASK, throws=(JobFailed,))
def evaluate(job_id: str) -> str:
    """Run external evaluation job ``job_id``; idempotent like ``train``."""
    from worker.runner.jobs import run_evaluation

    return _outcome(job_id, run_evaluation(job_id, get_settings()))


@worker_ready.connect
def sweep_checkpoints(**_: object) -> None:
    """Drop what a worker killed outright left behind, once its job has been declared lost."""
    from worker.runner.jobs import sweep_checkpoints

    try:
        sweep_checkpoints(get_settings())
    except Exception:  # the store may be down at start; the next start sweeps again
        log.warning("could not sweep old checkpoints", exc_info=True)
