"""Running one retrain job end to end: the plain function behind the Celery task."""

from __future__ import annotations

import logging
import random

from shared.config import Settings
from shared.datasets import Dataset, dataset_path, discover
from shared.errors import CxrError, JobCancelled
from shared.jobs import JobStore, open_job_store
from shared.modeling import resolve_base_weights
from shared.registry import Registry
from shared.schemas import JobProgress, JobState, TrainingParams
from worker.promotion import gate
from worker.publishing import build_manifest, publish_result
from worker.training import Reporter, train_model

log = logging.getLogger(__name__)


class StoreReporter:
    """Reports progress and liveness to the job store and relays cancellation."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id

    def epoch_end(self, progress: JobProgress) -> bool:
        return self.store.report_progress(self.job_id, progress)

    def alive(self) -> bool:
        return self.store.heartbeat(self.job_id)


def run_job(job_id: str, settings: Settings, store: JobStore | None = None) -> JobState:
    """Train and publish for a queued job; every outcome ends in the store, never mid-way."""
    store = store or open_job_store(settings)
    if not store.start(job_id):
        log.info("job %s is no longer queued (%s); skipping", job_id, store.get(job_id).state)
        return store.get(job_id).state
    try:
        version = _train_and_publish(store, job_id, settings)
    except JobCancelled:
        return store.finish(job_id, JobState.cancelled, error="cancelled by request").state
    except CxrError as exc:
        return store.finish(job_id, JobState.failed, error=f"{exc.code}: {exc.message}").state
    except Exception as exc:  # the job must end failed, whatever went wrong
        log.exception("job %s failed", job_id)
        return store.finish(job_id, JobState.failed,
                            error=f"internal_error: {type(exc).__name__}: {exc}").state
    return store.finish(job_id, JobState.succeeded, model_version=version).state


def _train_and_publish(store: JobStore, job_id: str, settings: Settings) -> str:
    params = TrainingParams.model_validate(store.record(job_id).params)
    dataset = discover(dataset_path(settings.data_dir, params.dataset))
    return train_and_publish(dataset, params, settings, StoreReporter(store, job_id))


def train_and_publish(dataset: Dataset, params: TrainingParams, settings: Settings,
                      reporter: Reporter) -> str:
    """Train on a discovered dataset and publish the result as the active version."""
    if params.seed is None:
        params = params.model_copy(update={"seed": random.randrange(2**31)})
    weights = resolve_base_weights(params.base_weights, settings)  # fails before any work
    result = train_model(dataset, params, weights, reporter, settings.max_image_pixels,
                         settings.worker_threads)
    if reporter.alive():
        raise JobCancelled("cancelled before publishing")
    registry = Registry(settings.models_dir)
    active = registry.active()
    promotion = gate(registry, params.activate, settings.promotion_metric,
                     settings.promotion_margin, result.test, dataset.classes,
                     result.metrics["test"], settings.max_image_pixels)
    manifest = build_manifest(result, params, dataset, weights,
                              parent=active.version if active else None, promotion=promotion)
    return publish_result(registry, result, manifest, activate=promotion["activated"])
