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
def _serve_metrics(**_: Any) -> None:
    """In the main process, before the pool forks: the pool's processes inherit the folder."""
    metrics.serve(get_settings())
