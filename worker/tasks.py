"""Celery tasks: thin wrappers that pass ids to plain functions.

TensorFlow is imported by those functions when a job runs, so only the pool's child
process loads it.
"""

from __future__ import annotations

from shared.config import get_settings
from shared.task_queue import EVALUATE_TASK, TRAIN_TASK
from worker.celery_app import app


@app.task(name=TRAIN_TASK)
def train(job_id: str) -> str:
    """Run retrain job ``job_id``; idempotent, since a job runs only from ``queued``."""
    from worker.jobs import run_job

    return run_job(job_id, get_settings()).value


@app.task(name=EVALUATE_TASK)
def evaluate(job_id: str) -> str:
    """Run external evaluation job ``job_id``; idempotent like ``train``."""
    from worker.jobs import run_evaluation

    return run_evaluation(job_id, get_settings()).value
