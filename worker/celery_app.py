"""The worker's Celery application: ``celery -A worker.celery_app worker -Q training``."""

from __future__ import annotations

from shared.config import get_settings
from shared.task_queue import make_celery

app = make_celery(get_settings())
app.conf.include = ["worker.tasks"]
