"""The worker's Celery application: ``celery -A worker.celery_app worker -Q training``."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, worker_init

from shared.config import get_settings
from shared.logs import configure_logging
from shared.task_queue import make_celery
from worker.runner import job_metrics as metrics

app = make_celery(get_settings())
app.conf.include = ["worker.tasks"]


@setup_logging.connect
def _log_lines(**_: Any) -> None:
    """The service's log format instead of Celery's (connected, Celery configures none)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@worker_init.connect
def _preload_training(**_: Any) -> None:
    """Import TensorFlow and the job code once, in the main process before the pool forks:
    each job's fresh child (one per job) then starts with them instead of spending seconds of
    the job importing them. Nothing here may run a TensorFlow op: its runtime (threads,
    devices) must start in the child that trains."""
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    import worker.runner.jobs  # noqa: F401


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """In the main process, before the pool forks: the pool's processes inherit the folder."""
    metrics.serve(get_settings())
