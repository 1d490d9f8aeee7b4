"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from api.deps import BatcherDep, ModelServerDep, QueueDep
from api.plumbing.body_guard import GuardedRoute
from shared.schemas import Health, Readiness
from shared.task_queue import broker_reachable

router = APIRouter(route_class=GuardedRoute, tags=["health"])


# Liveness answers on the event loop: it must not wait for a worker thread that decoding
# or loading may all be holding.
@router.get("/healthz", response_model=Health)
async def get_health() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.head("/healthz", include_in_schema=False)
async def head_health() -> Response:
    """What load balancers that probe with HEAD get: 200, no body."""
    return Response(status_code=200)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def get_readiness(server: ModelServerDep, queue: QueueDep,
                  batcher: BatcherDep) -> JSONResponse:
    """Ready when a model is loaded; the broker's reachability is reported beside it."""
    current = server.current
    body = Readiness(
        ready=current is not None,
        model_version=current.version if current else None,
        model_runtime=current.runtime if current else None,
        model_precision=current.precision if current else None,
        model_batch_size=batcher.limit(current) if current else None,
        model_error=server.load_error,
        broker="ok" if broker_reachable(queue) else "unreachable",
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
