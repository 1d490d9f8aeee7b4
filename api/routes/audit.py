"""The audit trail: who changed what, and who was refused (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AuditDep
from api.plumbing.auth import Admin
from api.plumbing.body_guard import GuardedRoute
from api.plumbing.errors import responses
from api.routes.query_types import Since
from shared.monitoring.records import AuditOutcome, AuditQuery
from shared.monitoring.views import AuditList

# Every route here needs an admin key: the trail names the keys and what they did.
router = APIRouter(route_class=GuardedRoute, tags=["audit"], dependencies=Admin,
                   responses=responses(401, 403, 503))


@router.get("/audit", response_model=AuditList, responses=responses(422))
def list_audit(
    store: AuditDep,
    action: Annotated[str | None, Query(max_length=64, description="e.g. activate")] = None,
    actor: Annotated[str | None, Query(max_length=128, description="A key's name.")] = None,
    target: Annotated[str | None, Query(max_length=128)] = None,
    outcome: AuditOutcome | None = None,
    since: Since = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> AuditList:
    """Changes and refused attempts within the trail's retention, newest first."""
    return AuditList(records=store.query(AuditQuery(
        action=action, actor=actor, target=target, outcome=outcome, since=since, limit=limit)))
