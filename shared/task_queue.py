"""The Celery application both sides share: its configuration and the task names.

The API sends tasks by name (``send_task(TRAIN_TASK, ...)``) and never imports worker code;
the worker registers the task under the same name.
"""

from __future__ import annotations

from celery import Celery

from shared.config import Settings

TRAIN_TASK = "cxr.train"
EVALUATE_TASK = "cxr.evaluate"
TRAINING_QUEUE = "training"


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for long, one-at-a-time training jobs."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("cxr", broker=settings.effective_broker_url)
    app.conf.update(
        # The job store (shared.job_store) holds outcomes; Celery needs no result backend.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=TRAINING_QUEUE,
        task_routes={TRAIN_TASK: {"queue": TRAINING_QUEUE},
                     EVALUATE_TASK: {"queue": TRAINING_QUEUE}},
        # Long jobs: acknowledge after the work, take one message at a time, and keep the
        # broker from redelivering a job that is still running.
        task_acks_late=True,
        # A job whose worker process died goes back to the queue; the next worker resumes it
        # from its checkpoint (shared.job_store.JobStore.start decides, at most job_max_attempts).
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_time_limit=settings.job_time_limit_s,
        task_soft_time_limit=max(settings.job_time_limit_s - 60, 30),
        # A fresh child per job: TensorFlow's memory goes back to the system after each one.
        worker_max_tasks_per_child=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        worker_hijack_root_logger=False,
    )
    if settings.uses_redis:
        # Redis redelivers an unacknowledged message after this long: it must outlast a job.
        app.conf.broker_transport_options = {"visibility_timeout": settings.job_time_limit_s
                                             + 3600}
    return app


def broker_reachable(app: Celery, timeout_s: float = 2.0) -> bool:
    """Whether a connection to the broker can be made now."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)
    except Exception:  # kombu raises transport-specific errors; any of them means "no"
        return False
    return True
