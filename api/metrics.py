"""The service's Prometheus metrics, served at ``GET /metrics`` (``api/routes/metrics.py``).

Each app has its own ``CollectorRegistry`` (on ``app.state.metrics``), never the process-wide
default one, so several apps in one process (the tests) do not clash. Requests are counted by
the middleware in ``api/plumbing/request_metrics.py``; batches, loads and predictions by the
hooks the batcher, the model server and the predict routes call.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.errors import CxrError
from shared.job_store import JobStore
from shared.ml.served import ServedVersion
from shared.monitoring.figures import LiveFigures
from shared.monitoring.live import live_by_version, live_figures
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.records import PredictionQuery
from shared.schemas import JobState

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# The job gauge counts the states of this many most recent jobs, read at each scrape.
JOBS_SCRAPED = 100
# The live figures read every labelled record of the log; scrapes within this many seconds of
# that reading share it, so a scrape every few seconds does not rescan a large log each time.
LIVE_FIGURES_SECONDS = 10.0


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


class LiveFiguresCollector(Collector):
    """Each version's figures on its labelled answers (``shared.monitoring.live``), read from
    the prediction log at most every ``LIVE_FIGURES_SECONDS``; only versions with labelled
    answers have series, and none while the log is unreachable."""

    def __init__(self, prediction_log: Callable[[], PredictionLog | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prediction_log = prediction_log
        self.clock = clock
        self._lock = threading.Lock()  # concurrent scrapes wait for one reading
        self._read_at: float | None = None
        self._figures: dict[str, LiveFigures] = {}

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= LIVE_FIGURES_SECONDS:
                store = self.prediction_log()
                if store is None:  # before the app's start-up
                    return []
                try:
                    self._figures = self._read(store)
                except (redis.RedisError, sqlite3.Error, CxrError) as exc:
                    log.warning("prediction log unreachable while scraping metrics: %s", exc)
                    return []
                self._read_at = now
            figures = self._figures
        labelled, accuracy, recall, reliable_right = families = self._families()
        for version, f in figures.items():
            labelled.add_metric([version], f.labelled)
            if f.accuracy.value is not None:
                accuracy.add_metric([version], f.accuracy.value)
            for name, p in f.per_class.items():
                if p.value is not None:
                    recall.add_metric([version, name], p.value)
            if f.reliable_right.value is not None:
                reliable_right.add_metric([version], f.reliable_right.value)
        return families

    @staticmethod
    def _read(store: PredictionLog) -> dict[str, LiveFigures]:
        records = store.query(PredictionQuery(labelled=True, limit=None))
        return {version: live_figures(group, answers=store.count(version))
                for version, group in sorted(live_by_version(records).items())}

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("cxr_live_labelled",
                              "Answers the reading room labelled, by version.", labels=["version"]),
            GaugeMetricFamily("cxr_live_accuracy",
                              "Share of labelled answers that were right.", labels=["version"]),
            GaugeMetricFamily("cxr_live_class_recall",
                              "Share of the images confirmed as a class that it called so.",
                              labels=["version", "class"]),
            GaugeMetricFamily("cxr_live_reliable_right",
                              "Share of labelled answers marked reliable that were right.",
                              labels=["version"]),
        ]


class ServiceMetrics:
    """Every series of one app, and the hooks that the request middleware, the batcher and
    the model server call."""

    def __init__(self, jobs: Callable[[], JobStore | None],
                 prediction_log: Callable[[], PredictionLog | None] | None = None) -> None:
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
        self.shadow_images = Counter(
            "cxr_shadow_images", "Images given to the shadow version, by how it ended.",
            ["version", "outcome"], registry=r)
        self.prediction_log_records = Counter(
            "cxr_prediction_log_records", "Answers given to the prediction log, by how it ended.",
            ["outcome"], registry=r)
        r.register(JobStateCollector(jobs))
        self.live: LiveFiguresCollector | None = None
        if prediction_log is not None:
            self.live = LiveFiguresCollector(prediction_log)
            r.register(self.live)

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

    def shadow_scored(self, version: str) -> None:
        """The shadow scored an image (the API's shadow scorer)."""
        self.shadow_images.labels(version, "scored").inc()

    def shadow_dropped(self, version: str) -> None:
        """The shadow's queue was full: the image was not scored."""
        self.shadow_images.labels(version, "dropped").inc()

    def shadow_failed(self, version: str) -> None:
        """The shadow failed to score an image."""
        self.shadow_images.labels(version, "failed").inc()

    def prediction_logged(self, dropped: bool) -> None:
        """An answer was written to the prediction log, or dropped."""
        self.prediction_log_records.labels("dropped" if dropped else "written").inc()
