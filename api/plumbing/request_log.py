"""ASGI middleware: a request id for every request, and one access log line per answer.

A client that hangs up before its answer is sent (one that pipelined requests and closed the
connection, say) is a fact of the network, not a fault of the service: the answer is dropped
and its access line says ``client_gone``, with no traceback.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logs import accept_request_id, log_context

log = logging.getLogger("api.access")

HEADER = "x-request-id"
# Probes and scrapes, every few seconds: logged at debug level only.
QUIET_ROUTES = {"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"}
# Error bodies are small JSON; a larger body is not read for its code.
MAX_ERROR_BODY = 64 * 1024
# Whether the request served in this task found its client gone (see UnfinishedAnswerFilter).
CLIENT_GONE: ContextVar[bool] = ContextVar("client_gone", default=False)
UNFINISHED = "ASGI callable returned without completing response."


class AccessLog:
    """Takes the client's X-Request-ID (or makes one), answers it in the same header, tags
    every line logged while serving with it, and logs method, path, route, status, duration,
    the error code of a 4xx/5xx and the model version that answered. Never the query string,
    a header or a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(HEADER.encode())
        request = accept_request_id(sent.decode("latin-1") if sent else None)
        start = time.perf_counter()
        answer: dict[str, object] = {"status": 500}
        error_body = bytearray()
        gone = False

        async def send_tagged(message: Message) -> None:
            nonlocal gone
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                headers = dict(message.get("headers", []))
                answer["model_version"] = _text(headers.get(b"x-model-version"))
                message["headers"] = [*message.get("headers", []),
                                      (HEADER.encode(), request.encode())]
            elif message["type"] == "http.response.body" and int(str(answer["status"])) >= 400:
                if len(error_body) < MAX_ERROR_BODY:
                    error_body.extend(message.get("body", b""))
            if gone:
                return
            try:
                await send(message)
            except (OSError, RuntimeError) as exc:
                if not client_gone(exc):
                    raise
                gone = True  # the rest of the answer has nowhere to go

        with log_context(request=request):
            try:
                await self.app(scope, receive, send_tagged)
            finally:
                # Left set: uvicorn's check that follows, in this task, reads it.
                CLIENT_GONE.set(gone)
                route = getattr(scope.get("route"), "path", None)
                level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
                log.log(level, "%s %s %s", scope["method"], scope["path"], answer["status"], extra={
                    "method": scope["method"], "path": scope["path"], "route": route,
                    "status": answer["status"], "error_code": _error_code(bytes(error_body)),
                    "model_version": answer.get("model_version"), "client_gone": gone,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 2)})


def client_gone(exc: BaseException) -> bool:
    """Whether sending failed because the client's connection is closed: a reset or broken
    pipe, or uvloop's refusal to write to a transport the peer already closed (uvicorn
    learns of the close a moment after the transport does, so it still tries)."""
    if isinstance(exc, ConnectionError):
        return True
    return isinstance(exc, RuntimeError) and "handler is closed" in str(exc)


class UnfinishedAnswerFilter(logging.Filter):
    """Drops uvicorn's "returned without completing response" error for an answer whose
    client hung up: uvicorn marks only the connection's newest request as disconnected, so
    one answered while later ones were pipelined behind it looks unfinished to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (CLIENT_GONE.get() and record.getMessage() == UNFINISHED)


def _text(raw: bytes | None) -> str | None:
    return raw.decode("latin-1") if raw else None


def _error_code(body: bytes) -> str | None:
    """The stable code of an error body, in either of the service's shapes."""
    if not body:
        return None
    try:
        error = json.loads(body)
        # ours, {"error": {"code"}}; the Open Inference Protocol's, {"error": str, "code"}
        code = error["code"] if isinstance(error["error"], str) else error["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None
