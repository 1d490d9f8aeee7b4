"""The service's Prometheus metrics, served at ``GET /metrics`` (``api/routes/metrics.py``).

Each app has its own ``CollectorRegistry`` (on ``app.state.metrics``), never the process-wide
default one, so several apps in one process (the tests) do not clash. Requests are counted by
the middleware in ``api/plumbing/request_metrics.py``; batches, loads and predictions by the
hooks the batcher, the model server and the predict routes call.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.errors import CxrError
from shared.job_store import JobStore
from shared.ml.served import ServedVersion
from shared.schemas import JobState

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# The job gauge counts the states of this many most recent jobs, read at each scrape.
JOBS_SCRAPED = 100


class JobStateCollector(Collector):
    """``cxr_jobs{state}`` read from the job store at scrape time; no series while it is down."""

    def __init__(self, store: Callable[[], JobStore | None]) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        store = self.store()
        if store is None:  # before the app's start-up
            return []
        try:
            states = Tally(job.state for job in store.recent(JOBS_SCRAPED))
        except (redis.RedisError, sqlite3.Error, CxrError) as exc:
            log.warning("job store unreachable while scraping metrics: %s", exc)
            return []
        family = self._family()
        for state in JobState:
            family.add_metric([state.value], states[state])
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "cxr_jobs", f"Jobs by state among the {JOBS_SCRAPED} most recent.", labels=["state"])


class ServiceMetrics:
    """Every series of one app, and the hooks that the request middleware, the batcher and
    the model server call."""

    def __init__(self, jobs: Callable[[], JobStore | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cxr_http_requests", "HTTP requests answered.",
                                ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("cxr_http_request_duration_seconds",
                                         "Time to answer an HTTP request.",
                                         ["method", "route"], registry=r)
        self.batch_size = Histogram("cxr_batch_size", "Images per forward pass.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.queue_wait = Histogram(
            "cxr_batch_queue_wait_seconds",
            "From an image's submission to the start of its batch's forward pass.",
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5), registry=r)
        self.model_load = Histogram(
            "cxr_model_load_seconds", "Loading, verifying and warming up a model version.",
            buckets=(.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.model_info = Gauge("cxr_model_info", "The served model version (always 1).",
                                ["version", "runtime"], registry=r)
        self.predictions = Counter("cxr_predictions", "Predictions answered, by label.",
                                   ["label"], registry=r)
        r.register(JobStateCollector(jobs))

    def request_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """A request was answered (``api.plumbing.request_metrics.RequestObserver``); the
        scrapes themselves are not counted."""
        if route != METRICS_PATH:
            self.requests.labels(method, route, str(status)).inc()
            self.request_seconds.labels(method, route).observe(seconds)

    def batch_started(self, size: int, waits: Sequence[float]) -> None:
        """A forward pass is about to run (``api.inference.batching.BatchObserver``)."""
        self.batch_size.observe(size)
        for wait in waits:
            self.queue_wait.observe(wait)

    def model_loaded(self, model: ServedVersion, seconds: float) -> None:
        """The model server swapped in ``model`` (``api.inference.serving.ModelServer``)."""
        self.model_load.observe(seconds)
        self.model_info.clear()  # only the served version has a series
        self.model_info.labels(model.version, model.runtime).set(1)

    def predicted(self, label: str) -> None:
        self.predictions.labels(label).inc()

