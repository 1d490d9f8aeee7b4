"""Model versions: list (with their live figures), inspect, curves, activate (pin or roll
back), delete."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Annotated, TypeVar

import redis
from fastapi import APIRouter, Query, Request, Response, status

from api.deps import (
    JobStoreDep,
    ModelServerDep,
    PredictionLogDep,
    QueueDep,
    RegistryDep,
    SettingsDep,
    ShadowScorerDep,
)
from api.enqueue import enqueue
from api.inference.serving import ModelServer
from api.plumbing.auth import Admin, Reader
from api.plumbing.body_guard import GuardedRoute
from api.plumbing.errors import responses
from shared.activation import check_activation
from shared.datasets import dataset_path, discover, match_classes
from shared.errors import ModelNotFound
from shared.lineage import comparable_classes, named_version
from shared.manifest import ExternalReport, Manifest
from shared.monitoring.figures import LiveFigures
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.views import (
    Deleted,
    MonitoredList,
    MonitoredSummary,
    MonitoredVersion,
    live_of,
    live_one,
)
from shared.registry import Registry
from shared.registry.files import CARD_HTML, CARD_MD, CURVES_FILE, RELIABILITY_FILE
from shared.schemas import EvaluationParams, EvaluationRequest, JobAccepted, ServingState
from shared.task_queue import EVALUATE_TASK
from shared.usage import job_usage

log = logging.getLogger(__name__)
# What an unreachable prediction log raises: the models views answer without live figures.
LOG_DOWN = (redis.RedisError, sqlite3.Error, OSError)
T = TypeVar("T")
ForceQuery = Annotated[bool, Query(description=(
    "Confirm activating a version whose test balanced accuracy interval includes chance (or "
    "that has none); without it such a version answers 409 confirmation_required."))]

# Reads answer 401 without a key when CXR_REQUIRE_KEY_FOR_READS is on, and 503 when the
# registry's object store is unreachable.
router = APIRouter(
    route_class=GuardedRoute, prefix="/models", tags=["models"], dependencies=Reader,
    responses=responses(401, 503))


def _serving(server: ModelServerDep) -> ServingState:
    current = server.current
    return ServingState(version=current.version if current else None,
                        load_error=server.load_error,
                        runtime=current.runtime if current else None,
                        precision=current.precision if current else None)


@router.get("", response_model=MonitoredList)
def list_models(registry: RegistryDep, server: ModelServerDep,
                predictions: PredictionLogDep) -> MonitoredList:
    """All versions, newest first, with their live figures; the active one, the shadow, and
    what this process serves."""
    return monitored_list(registry, server, predictions)


def monitored_list(registry: Registry, server: ModelServer,
                   predictions: PredictionLog) -> MonitoredList:
    """The versions view: GET /models's answer, and activation's."""
    active, shadow = registry.active(), registry.shadow()
    manifests = registry.versions()
    live = _unless_log_down(lambda: live_of(predictions, manifests)) or {}
    return MonitoredList(
        active=active.version if active else None,
        shadow=shadow.version if shadow else None,
        versions=[MonitoredSummary(**m.summary().model_dump(), live=live.get(m.version),
                                   shadow=shadow is not None and shadow.version == m.version)
                  for m in manifests],
        serving=_serving(server))


def _unless_log_down(read: Callable[[], T]) -> T | None:
    """``read()``, or None while the prediction log is unreachable: the versions are still
    listed."""
    try:
        return read()
    except LOG_DOWN as exc:
        log.warning("live figures left out: the prediction log is unreachable: %s", exc)
        return None


@router.get("/{version}", response_model=MonitoredVersion, responses=responses(404, 422))
def get_model(version: str, registry: RegistryDep, server: ModelServerDep,
              predictions: PredictionLogDep) -> MonitoredVersion:
    """The full manifest of a version, its live figures, and how this process serves it
    (when it does)."""
    manifest: Manifest = registry.manifest(version)
    current = server.current
    serving = _serving(server) if current and current.version == version else None
    live: LiveFigures | None = _unless_log_down(lambda: live_one(predictions, manifest))
    shadow = registry.shadow()
    return MonitoredVersion(**manifest.model_dump(), serving=serving, live=live,
                            shadow=shadow is not None and shadow.version == version)


@router.get("/{version}/evaluations", response_model=list[ExternalReport],
            responses=responses(404, 422))
def list_model_evaluations(version: str, registry: RegistryDep) -> list[ExternalReport]:
    """External evaluations of a version (`cxr evaluate`), kept apart from its test results."""
    registry.manifest(version)
    return registry.evaluations(version)


@router.post("/{version}/evaluate", status_code=status.HTTP_202_ACCEPTED,
             response_model=JobAccepted, responses=responses(400, 401, 403, 404, 422, 503),
             dependencies=Admin)
def create_evaluation_job(version: str, body: EvaluationRequest, request: Request,
                          settings: SettingsDep, registry: RegistryDep, jobs: JobStoreDep,
                          queue: QueueDep) -> JobAccepted:
    """Queue an external evaluation of a version on a stored dataset (another hospital's
    images, say); the report appears under /models/{version}/evaluations."""
    classes = list(registry.manifest(version).classes)
    dataset = discover(dataset_path(settings.data_dir, body.dataset), min_classes=1)
    match_classes(dataset.classes, classes, body.dataset)  # as the worker will, first thing
    compare = None
    if body.compare is not None:  # named by id now, and refused now if it cannot be compared
        compare = named_version(registry, body.compare)
        comparable_classes(registry.manifest(compare), classes)
    return enqueue(EVALUATE_TASK, EvaluationParams(dataset=body.dataset, version=version,
                                                   compare=compare), request, jobs, queue)


# What a client may fetch of a version, by the name in the URL: the file and its type.
ARTIFACTS = {CURVES_FILE: (CURVES_FILE, "image/png"),
             RELIABILITY_FILE: (RELIABILITY_FILE, "image/png"),
             "card": (CARD_HTML, "text/html; charset=utf-8"),
             CARD_MD: (CARD_MD, "text/markdown; charset=utf-8")}


@router.get("/{version}/{artifact}", response_class=Response, responses={
    200: {"content": {"image/png": {}, "text/html": {}, "text/markdown": {}}},
    **responses(404, 422)})
def get_model_artifact(version: str, artifact: str, registry: RegistryDep) -> Response:
    """A version's files: curves.png (loss and accuracy per epoch), reliability.png
    (calibration), card (the model card as HTML) and card.md."""
    if artifact not in ARTIFACTS:
        raise ModelNotFound(f"versions have no {artifact!r}; try one of {sorted(ARTIFACTS)}")
    name, media_type = ARTIFACTS[artifact]
    path = registry.verified_file(version, name)
    if path is None:
        raise ModelNotFound(f"version {version!r} has no {artifact}")
    # Read now (small files): a local copy of an object store's version may be dropped from
    # the cache by a swap before a streamed answer would have finished.
    return Response(path.read_bytes(), media_type=media_type)


@router.post("/{version}/activate", response_model=MonitoredList,
             responses=responses(401, 403, 404, 409, 422), dependencies=Admin)
def activate_model(version: str, request: Request, registry: RegistryDep,
                   server: ModelServerDep, predictions: PredictionLogDep,
                   scorer: ShadowScorerDep, force: ForceQuery = False) -> MonitoredList:
    """Make a version the one served by every API process (pin, or roll back). A version not
    shown better than chance on its test split answers 409 confirmation_required unless
    force=true confirms it (the audit trail records the warning). Activating the shadow
    ends the shadow: it is the active version now."""
    forced = check_activation(registry.manifest(version), force)
    registry.activate(version)
    server.wake()
    details = [f"forced: {forced}"] if forced else []
    shadow = registry.shadow()
    if shadow is not None and shadow.version == version:
        registry.end_shadow()
        scorer.wake()
        details.append("was the shadow; the shadow ended")
    if details:
        request.state.audit_detail = "; ".join(details)
    return monitored_list(registry, server, predictions)


@router.delete("/{version}", response_model=Deleted,
               responses=responses(401, 403, 404, 409, 422), dependencies=Admin)
def delete_model(version: str, registry: RegistryDep, jobs: JobStoreDep) -> Deleted:
    """Remove a version with its evaluations (409 for the active version, the shadow, and a
    version that a queued or running job uses)."""
    registry.manifest(version)
    job_usage(jobs).check_version(version)
    registry.delete(version)  # refuses the active version and the shadow (InUse)
    return Deleted(deleted="version", name=version)
