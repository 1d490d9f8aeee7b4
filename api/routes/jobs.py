"""Retrain jobs: queue, follow, list, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from api.deps import JobStoreDep, QueueDep, RegistryDep, SettingsDep
from api.enqueue import enqueue
from api.plumbing.auth import Admin, Reader
from api.plumbing.body_guard import GuardedRoute
from api.plumbing.errors import responses
from shared.datasets import combine, dataset_path, discover, match_classes
from shared.errors import WeightsUnavailable
from shared.lineage import resolve_parent
from shared.schemas import JobAccepted, JobList, JobStatus
from shared.task_queue import TRAIN_TASK
from shared.training_params import TrainingParams

# Reads answer 401 without a key when CXR_REQUIRE_KEY_FOR_READS is on, and every route 503
# while the job store (Redis) is unreachable.
router = APIRouter(
    route_class=GuardedRoute, tags=["jobs"], dependencies=Reader, responses=responses(401, 503))


@router.post("/retrain", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted,
             responses=responses(400, 401, 403, 404, 422), dependencies=Admin)
def create_retrain_job(params: TrainingParams, request: Request, settings: SettingsDep,
                       registry: RegistryDep, jobs: JobStoreDep,
                       queue: QueueDep) -> JobAccepted:
    """Queue a retrain job on a stored dataset, or a fine-tune of a published version
    (`base_version`) on a site's films; poll its status_url."""
    # The worker's own checks, made before queueing: a job that cannot succeed is refused.
    # A fine-tune's one-class set is refused by the class check, which says why.
    least = 1 if params.base_version else 2
    training = combine([(name, discover(dataset_path(settings.data_dir, name), least))
                        for name in (params.dataset, *params.datasets)])  # classes must match
    # "active" is named by id now: the job fine-tunes the version that was active when asked.
    params, _ = resolve_parent(params, registry, training.classes, params.dataset)
    for name in params.external_datasets:  # each scored by the trained model: its classes
        external = discover(dataset_path(settings.data_dir, name), min_classes=1)
        match_classes(external.classes, training.classes, name)
    if params.base_weights == "file" and settings.base_weights_file is None:
        raise WeightsUnavailable("base_weights 'file' needs CXR_BASE_WEIGHTS_FILE on the server")
    return enqueue(TRAIN_TASK, params.seeded(), request, jobs, queue)


@router.get("/jobs", response_model=JobList, responses=responses(422))
def list_jobs(jobs: JobStoreDep, limit: int = 50) -> JobList:
    """Recent jobs, newest first."""
    return JobList(jobs=jobs.recent(max(1, min(limit, 500))))


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=responses(404, 422))
def get_job(job_id: str, jobs: JobStoreDep) -> JobStatus:
    """A job's state, progress, resulting model version or error."""
    return jobs.get(job_id)


@router.delete("/jobs/{job_id}", response_model=JobStatus,
               responses=responses(401, 403, 404, 409, 422), dependencies=Admin)
def cancel_job(job_id: str, jobs: JobStoreDep) -> JobStatus:
    """Cancel: a queued job never runs; a running one stops at the next batch."""
    return jobs.cancel(job_id)
