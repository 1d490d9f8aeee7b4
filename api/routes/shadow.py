"""The shadow version: a published candidate scored beside the active one on live traffic,
after each answer is sent; start it, end it, and read how it compares.

Included before ``api.routes.models``, whose ``GET /models/{version}/{artifact}`` would
otherwise take ``/models/{version}/shadow``.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import PredictionLogDep, RegistryDep, ShadowScorerDep
from api.monitoring.shadow import ShadowScorer
from api.plumbing.auth import Admin, Reader
from api.plumbing.body_guard import GuardedRoute
from api.plumbing.errors import responses
from shared.errors import InUse, ShadowNotFound
from shared.lineage import comparable_classes
from shared.monitoring.figures import ShadowReport
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.records import PredictionQuery
from shared.monitoring.shadow_report import shadow_report
from shared.registry import Registry

# Reads answer 401 without a key when CXR_REQUIRE_KEY_FOR_READS is on, and 503 when the
# registry's store or the log's is unreachable.
router = APIRouter(route_class=GuardedRoute, prefix="/models", tags=["models"],
                   dependencies=Reader, responses=responses(401, 503))


def report_of(version: str, registry: Registry, predictions: PredictionLog,
              scorer: ShadowScorer) -> ShadowReport:
    """The shadow report of ``version`` from the log, as this process sees it."""
    pointer = registry.shadow()
    loaded = scorer.current
    return shadow_report(
        version, predictions.query(PredictionQuery(shadow=version, limit=None)),
        predictions.shadow_counts(version),
        current=pointer is not None and pointer.version == version,
        loaded=loaded is not None and loaded.version == version,
        load_error=scorer.load_error if scorer.version == version else None)


@router.post("/{version}/shadow", response_model=ShadowReport,
             responses=responses(401, 403, 404, 409, 422), dependencies=Admin)
def start_shadow(version: str, registry: RegistryDep, predictions: PredictionLogDep,
                 scorer: ShadowScorerDep) -> ShadowReport:
    """Make a published version the shadow, replacing any other: every API process scores
    each answered image with it too, after the answer is sent (409 for the active version,
    422 class_mismatch for one that answers other classes)."""
    candidate = registry.manifest(version)
    active = registry.active()
    if active is not None and active.version == version:
        raise InUse(f"version {version} is the active version; it cannot shadow itself")
    if active is not None:  # compared image by image with the active version's answers
        comparable_classes(candidate, list(registry.manifest(active.version).classes))
    registry.set_shadow(version)
    scorer.wake()  # this process follows at once; the others at their next poll
    return report_of(version, registry, predictions, scorer)


@router.delete("/{version}/shadow", response_model=ShadowReport,
               responses=responses(401, 403, 404, 422), dependencies=Admin)
def end_shadow(version: str, registry: RegistryDep, predictions: PredictionLogDep,
               scorer: ShadowScorerDep) -> ShadowReport:
    """End the shadow; answers its final report."""
    pointer = registry.shadow()
    if pointer is None or pointer.version != version:
        raise ShadowNotFound(f"version {version} is not the shadow")
    registry.end_shadow()
    scorer.wake()  # this process follows at once; the others at their next poll
    return report_of(version, registry, predictions, scorer)


@router.get("/{version}/shadow", response_model=ShadowReport, responses=responses(404, 422))
def get_shadow_report(version: str, registry: RegistryDep, predictions: PredictionLogDep,
                      scorer: ShadowScorerDep) -> ShadowReport:
    """How the shadow (or an earlier one, within the log's retention) compares with the
    active version on the same live images: agreement, each side's answers and, on the
    labelled images, each side's accuracy with the paired interval of their difference."""
    report = report_of(version, registry, predictions, scorer)
    if not report.current and not (report.images or report.seen or report.dropped
                                   or report.failed):
        raise ShadowNotFound(f"version {version} is not the shadow and has no shadow records")
    return report
