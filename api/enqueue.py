"""Queueing a job: record it as queued, then send its task by name (never importing worker)."""

from __future__ import annotations

import uuid

from celery import Celery
from fastapi import Request

from shared import logs
from shared.errors import BrokerUnavailable
from shared.job_store import JobStore
from shared.schemas import EvaluationParams, JobAccepted, JobState
from shared.task_queue import TRAINING_QUEUE
from shared.training_params import TrainingParams


def enqueue(task: str, params: TrainingParams | EvaluationParams, request: Request,
            jobs: JobStore, queue: Celery) -> JobAccepted:
    """The job exists in the store before its message, so a fast worker always finds it."""
    job_id = uuid.uuid4().hex
    jobs.create(job_id, params, request_id=logs.request_id.get())
    try:
        queue.send_task(task, args=[job_id], task_id=job_id, queue=TRAINING_QUEUE, retry=False)
    except Exception as exc:  # kombu's errors vary by transport; the job must not stay queued
        jobs.finish(job_id, JobState.failed, error="broker_unavailable: could not queue")
        raise BrokerUnavailable(f"the job queue is unreachable: {exc}") from exc
    # For the audit trail (api/plumbing/audit_trail.py): the dataset, and the job queued.
    request.state.audit_target = params.dataset
    request.state.audit_detail = f"job {job_id}"
    return JobAccepted(job_id=job_id, status_url=str(request.url_for("get_job", job_id=job_id)))
