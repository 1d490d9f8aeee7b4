"""Model versions: list, inspect, curves, activate (pin or roll back)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import ModelServerDep, RegistryDep
from api.errors import responses
from shared.errors import ModelNotFound
from shared.registry import CURVES_FILE
from shared.schemas import Manifest, ModelList, ServingState

router = APIRouter(prefix="/models", tags=["models"])


def _serving(server: ModelServerDep) -> ServingState:
    current = server.current
    return ServingState(version=current.version if current else None,
                        load_error=server.load_error)


@router.get("", response_model=ModelList)
def list_models(registry: RegistryDep, server: ModelServerDep) -> ModelList:
    """All versions, newest first, the active one, and what this process serves."""
    active = registry.active()
    return ModelList(active=active.version if active else None,
                     versions=[Manifest.model_validate(m).summary()
                               for m in registry.versions()],
                     serving=_serving(server))


@router.get("/{version}", response_model=Manifest, responses=responses(404))
def get_model(version: str, registry: RegistryDep) -> Manifest:
    """The full manifest of a version."""
    return Manifest.model_validate(registry.manifest(version))


@router.get("/{version}/curves.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, **responses(404)})
def get_model_curves(version: str, registry: RegistryDep) -> FileResponse:
    """Training and validation loss and accuracy per epoch."""
    path = registry.version_dir(version) / CURVES_FILE
    if not path.is_file():
        raise ModelNotFound(f"no curves for version {version!r}")
    return FileResponse(path, media_type="image/png")


@router.post("/{version}/activate", response_model=ModelList, responses=responses(404))
def activate_model(version: str, registry: RegistryDep, server: ModelServerDep) -> ModelList:
    """Make a version the one served by every API process (pin, or roll back)."""
    registry.activate(version)
    server.wake()
    return list_models(registry, server)
