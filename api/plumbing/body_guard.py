"""Requests are judged before their bodies are read: the key first, then the body's size as
it streams in.

FastAPI reads (and Starlette spools) a whole body before a route's dependencies run, so
without this a request with no key could send hundreds of megabytes before its 401, and a
chunked body (no Content-Length) was only measured once spooled. Each route's rules are read
off the route itself: the key it needs from its ``require_admin``, ``require_labeler`` or
``require_reader`` dependency, and its size limit from ``limited_to``, else from whether it
takes a form (uploads) or JSON. Every router of the API is made with ``route_class=GuardedRoute``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import HTTPException
from fastapi.params import Form
from fastapi.routing import APIRoute
from starlette.types import Message, Receive

from api.plumbing.auth import HEADER, Role, require_admin, require_labeler, require_reader
from shared.config import Settings
from shared.errors import PayloadTooLarge

# A multipart body carries its part headers and boundaries beside the file itself, an infer
# body its JSON header and a 4-byte length per image.
FRAMING_OVERHEAD = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised from ``receive``: FastAPI re-raises an HTTPException met while reading a body
    (any other error there becomes a 400), and the app's handler answers it as JSON."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds this route's limit of {limit} bytes")


def limited_to(setting: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Marks a route whose body is bounded by another byte setting than its kind's
    (``/predict`` and the protocol's infer, which reads its body itself, by
    CXR_MAX_IMAGE_BYTES)."""
    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        endpoint.__dict__["body_limit_setting"] = setting
        return endpoint

    return mark


@dataclass(frozen=True)
class Rules:
    role: Role | None
    limit: int


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    found = {dependant.call} if dependant.call else set()
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


# The strongest first: a route marked by several is judged by the strongest.
_CHECKS: dict[Role, Callable[[Request, str | None], object]] = {
    "admin": require_admin, "labeler": require_labeler, "reader": require_reader}


def rules_of(route: APIRoute, settings: Settings) -> Rules:
    calls = _calls(route.dependant)
    role = next((role for role, check in _CHECKS.items() if check in calls), None)
    setting = getattr(route.endpoint, "body_limit_setting", None)
    if setting is not None:
        # CXR_MAX_UPLOAD_BYTES bounds every body; a route's own limit may only be tighter
        own = int(getattr(settings, setting)) + FRAMING_OVERHEAD
        return Rules(role, min(own, settings.max_upload_bytes))
    takes_form = any(isinstance(p.field_info, Form) for p in route.dependant.body_params)
    return Rules(role, settings.max_upload_bytes if takes_form else settings.max_json_bytes)


class GuardedRoute(APIRoute):
    """A route that applies its rules before FastAPI reads the body (which FastAPI does
    before it runs the route's dependencies, the key check among them): FastAPI's documented
    way to wrap a route's request handling."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if request.method in ("GET", "HEAD", "OPTIONS"):
                return await handler(request)
            settings: Settings = request.app.state.settings
            rules = rules_of(self, settings)
            _refuse_early(rules, request, settings)
            return await handler(Request(request.scope, _counted(request.receive, rules.limit)))

        return guarded


def _counted(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


def _refuse_early(rules: Rules, request: Request, settings: Settings) -> None:
    """Raise what the route would answer anyway (the app's handlers make it the JSON error):
    a missing or weaker key, or a declared size over the route's limit."""
    if rules.role is not None:
        _CHECKS[rules.role](request, request.headers.get(HEADER))
    length = request.headers.get("content-length", "")
    # Leading zeros dropped before int(), which refuses strings of over 4300 digits.
    digits = length.lstrip("0") if length.isascii() and length.isdigit() else ""
    if len(digits) > len(str(rules.limit)) or (digits and int(digits) > rules.limit):
        raise PayloadTooLarge(f"request body of {digits[:20]}{'...' if len(digits) > 20 else ''}"
                              f" bytes exceeds this route's limit of {rules.limit} bytes")
