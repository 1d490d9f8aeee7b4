"""The worker's own Prometheus metrics: jobs by kind and outcome, their duration, epochs.

Jobs run in Celery's pool processes, a fresh one per job, so the metrics use
prometheus_client's multiprocess mode: every process writes its values to files in one
folder of this worker, and the worker's main process serves their sum on
``CXR_WORKER_METRICS_PORT``. Counters and histograms of finished pool processes keep counting,
as they should; the folder gains two small files per job and is emptied at each start.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from functools import cache
from pathlib import Path
from typing import Any

from shared.config import Settings

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
JOB_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 21600)


def serve(settings: Settings) -> Path | None:
    """In the worker's main process, before its pool starts: set up the folder and serve the
    metrics over HTTP. Returns the folder; None when no port is configured."""
    if settings.worker_metrics_port is None:
        return None
    base, host = settings.state_dir / "worker-metrics", socket.gethostname()
    _sweep(base, host)
    folder = base / f"{host}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # Read by prometheus_client when first imported, here and in the forked pool processes.
    os.environ[MULTIPROCESS_ENV] = str(folder)
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host,
                          registry=registry)
    except OSError as exc:  # a port taken must not keep the worker from training
        log.error("worker metrics not served on %s:%d: %s", settings.worker_metrics_host,
                  settings.worker_metrics_port, exc)
        return None
    log.info("worker metrics on http://%s:%d/metrics", settings.worker_metrics_host,
             settings.worker_metrics_port)
    return folder


def _sweep(base: Path, host: str) -> None:
    """Remove the folders of this host's workers that are gone (their counts went with them:
    a restarted worker starts from zero, which Prometheus counters allow)."""
    if not base.is_dir():
        return
    for folder in base.glob(f"{host}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@cache
def _metrics() -> dict[str, Any]:
    # Created on first use, in the process that runs the job, after MULTIPROCESS_ENV is set.
    from prometheus_client import Counter, Histogram

    return {
        "jobs": Counter("cxr_worker_jobs", "Jobs this worker ended, by kind and outcome.",
                        ["kind", "outcome"]),
        "seconds": Histogram("cxr_worker_job_duration_seconds",
                             "Wall time of the jobs this worker ran, by kind and outcome.",
                             ["kind", "outcome"], buckets=JOB_SECONDS_BUCKETS),
        "epochs": Counter("cxr_worker_epochs", "Training epochs this worker completed."),
    }


def job_ended(kind: str, outcome: str, seconds: float) -> None:
    metrics = _metrics()
    metrics["jobs"].labels(kind, outcome).inc()
    metrics["seconds"].labels(kind, outcome).observe(seconds)


def epoch_done() -> None:
    _metrics()["epochs"].inc()
