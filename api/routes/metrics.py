"""Prometheus metrics of this API process (``api/metrics.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ServiceMetricsDep
from api.metrics import METRICS_PATH
from api.plumbing.auth import Reader
from api.plumbing.body_guard import GuardedRoute

# Open like the other reads (a key with CXR_REQUIRE_KEY_FOR_READS); for scrapers, not clients,
# so kept out of the OpenAPI schema.
router = APIRouter(
    route_class=GuardedRoute, tags=["metrics"], dependencies=Reader, include_in_schema=False)


@router.get(METRICS_PATH)
def get_metrics(metrics: ServiceMetricsDep) -> Response:
    """Every series in the Prometheus text format; the job gauge is read from the store now."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
