"""ASGI middleware: each HTTP request's method, route and status, and the time it took.

Requests are named by route template (``/models/{version}``), never by path, so the number of
series stays bounded however clients spell URLs; a request no route matched is ``unmatched``.
"""

from __future__ import annotations

import time
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
# Any other method a client invents is counted as "other": labels stay bounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestObserver(Protocol):
    def request_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request was answered (or failed before an answer started: status 500)."""


class RequestMetrics:
    """Tells the observer of each HTTP request by method, route and status."""

    def __init__(self, app: ASGIApp, observer: RequestObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500  # 500 unless an answer started

        async def send_seeing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seeing_status)
        finally:
            # The router sets scope["route"] in place once a route matched the path.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.observer.request_answered(method, route, status, time.perf_counter() - start)
