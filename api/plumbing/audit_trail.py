"""ASGI middleware: the audit trail. Every answer of a route that changes something (and
every refusal of one, 401 and 403 included) is appended to the audit store once the answer
has been sent: who (the key's name and role, never the key), what, on what, how it ended.

Routes are named by method and template, as the router matched them; reads and requests no
route matched are not audited. The identified key comes from ``request.state.api_key``
(api/plumbing/auth.py); a route may add ``request.state.audit_target`` (what a body named,
such as an uploaded dataset) and ``request.state.audit_detail`` (a queued job, say, or
"forced: <warning>" for an activation confirmed with force=true).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs
from shared.config import ApiKey
from shared.monitoring.audit import AuditStore, audit_now
from shared.monitoring.records import AuditOutcome

log = logging.getLogger(__name__)

# (method, route template) -> the action recorded.
ACTIONS: dict[tuple[str, str], str] = {
    ("POST", "/datasets"): "dataset.upload",
    ("DELETE", "/datasets/{name}"): "dataset.delete",
    ("POST", "/retrain"): "retrain",
    ("DELETE", "/jobs/{job_id}"): "job.cancel",
    ("POST", "/models/{version}/evaluate"): "evaluate",
    ("POST", "/models/{version}/activate"): "activate",
    ("POST", "/models/{version}/shadow"): "shadow.start",
    ("DELETE", "/models/{version}/shadow"): "shadow.end",
    ("POST", "/predictions/{prediction_id}/label"): "label",
    ("DELETE", "/models/{version}"): "model.delete",
}
AUDITED_METHODS = frozenset(method for method, _ in ACTIONS)
# The path parameters that name what a change is about, in the order looked for.
TARGET_PARAMS = ("version", "name", "job_id", "prediction_id")
REQUEST_ID_HEADER = b"x-request-id"
# Error bodies are small JSON; a larger body is not read for its code.
MAX_ERROR_BODY = 64 * 1024


class AuditTrail:
    """Appends one audit record per answer of an audited route, after the answer is sent;
    a store that fails is logged and changes no answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in AUDITED_METHODS:
            await self.app(scope, receive, send)
            return
        # Shared with every Request made from this scope: the routes' request.state.
        state: dict[str, Any] = scope.setdefault("state", {})
        answer: dict[str, Any] = {"status": 500, "request_id": None}
        error_body = bytearray()

        async def send_seen(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                sent = dict(message.get("headers", [])).get(REQUEST_ID_HEADER)
                answer["request_id"] = sent.decode("latin-1") if sent else None
            elif (message["type"] == "http.response.body" and answer["status"] >= 400
                  and len(error_body) < MAX_ERROR_BODY):
                error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        except Exception:
            await self._append(scope, state, 500, b"", answer["request_id"], "internal_error")
            raise
        await self._append(scope, state, answer["status"], bytes(error_body),
                           answer["request_id"])

    async def _append(self, scope: Scope, state: dict[str, Any], status: int,
                      error_body: bytes, sent_request_id: str | None,
                      error: str | None = None) -> None:
        template = getattr(scope.get("route"), "path", None)
        action = ACTIONS.get((scope["method"], template or ""))
        store: AuditStore | None = getattr(scope["app"].state, "audit", None)
        if action is None or store is None:
            return
        error = error or _error_code(error_body)  # read only for an audited route's refusal
        key = state.get("api_key")
        actor = key if isinstance(key, ApiKey) else None
        params = scope.get("path_params", {})
        target = next((str(params[p]) for p in TARGET_PARAMS if p in params),
                      state.get("audit_target"))
        detail = state.get("audit_detail")
        try:
            await run_in_threadpool(
                audit_now, store, actor=actor.name if actor else None,
                role=actor.role if actor else None, action=action, target=target,
                outcome=outcome_of(status), status=status, error=error,
                request_id=logs.request_id.get() or sent_request_id,
                detail=None if detail is None else str(detail))
        except Exception:  # the store's errors vary by backend; the answer is already sent
            log.exception("could not append the audit record of %s %s", action, target)


def outcome_of(status: int) -> AuditOutcome:
    """ok for a 2xx (or 3xx) answer, refused for a 4xx, failed for a 5xx."""
    if status >= 500:
        return "failed"
    return "refused" if status >= 400 else "ok"


def _error_code(body: bytes) -> str | None:
    """The stable code of the service's error body, ``{"error": {"code": ...}}``."""
    if not body:
        return None
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None
