"""Model versions: list, inspect, curves, activate (pin or roll back)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from api.deps import JobStoreDep, ModelServerDep, QueueDep, RegistryDep, SettingsDep
from api.enqueue import enqueue
from api.plumbing.auth import Admin, Reader
from api.plumbing.body_guard import GuardedRoute
from api.plumbing.errors import responses
from shared.datasets import dataset_path, discover, match_classes
from shared.errors import ModelNotFound
from shared.lineage import comparable_classes, named_version
from shared.manifest import ExternalReport, ModelList, VersionDetail
from shared.registry.files import CARD_HTML, CARD_MD, CURVES_FILE, RELIABILITY_FILE
from shared.schemas import EvaluationParams, EvaluationRequest, JobAccepted, ServingState
from shared.task_queue import EVALUATE_TASK

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


@router.get("", response_model=ModelList)
def list_models(registry: RegistryDep, server: ModelServerDep) -> ModelList:
    """All versions, newest first, the active one, and what this process serves."""
    active = registry.active()
    return ModelList(active=active.version if active else None,
                     versions=[m.summary() for m in registry.versions()],
                     serving=_serving(server))


@router.get("/{version}", response_model=VersionDetail, responses=responses(404, 422))
def get_model(version: str, registry: RegistryDep, server: ModelServerDep) -> VersionDetail:
    """The full manifest of a version, and how this process serves it (when it does)."""
    manifest = registry.manifest(version)
    current = server.current
    serving = _serving(server) if current and current.version == version else None
    return VersionDetail(**manifest.model_dump(), serving=serving)


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


@router.post("/{version}/activate", response_model=ModelList,
             responses=responses(401, 403, 404, 422), dependencies=Admin)
def activate_model(version: str, registry: RegistryDep, server: ModelServerDep) -> ModelList:
    """Make a version the one served by every API process (pin, or roll back)."""
    registry.activate(version)
    server.wake()
    return list_models(registry, server)
