"""The protocol's refusals: ``{"error": "<code>: <message>", "code": <code>}``, what
tritonclient raises with the service's stable code beside, for every failure of its routes.

A failure is shaped as for the service's own routes (``api.plumbing.errors.refusal_of``) and
only rendered differently here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from api.oip.codec import InvalidInferRequest, ProtocolError
from api.plumbing.body_guard import GuardedRoute
from api.plumbing.errors import CLIENT_GONE, Refusal, refusal_of, retry_later
from api.plumbing.errors import STATUS as SERVICE_STATUS
from shared.errors import CxrError

log = logging.getLogger(__name__)

# The service's statuses, and 400 for a body the protocol does not allow.
STATUS = {**SERVICE_STATUS, InvalidInferRequest: 400}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of a route's refusals."""
    return {status: {"model": ProtocolError} for status in statuses}


def refusal(status: int, code: str, message: str) -> JSONResponse:
    """The protocol's shape: ``message`` is what clients raise, ``code`` the service's."""
    return JSONResponse(ProtocolError(error=message, code=code).model_dump(),
                        status_code=status, headers=retry_later(status))


def protocol_response(shaped: Refusal) -> JSONResponse:
    """A refusal shaped as for the service's own routes (api/plumbing/errors.py), in the
    protocol's shape."""
    return JSONResponse(ProtocolError(error=f"{shaped.code}: {shaped.message}",
                                      code=shaped.code).model_dump(),
                        status_code=shaped.status, headers=shaped.headers)


class ProtocolRoute(GuardedRoute):
    """A guarded route whose refusals take the protocol's shape, the key check's and the
    body limit's among them (GuardedRoute raises those before the route's code runs), and
    an unexpected error's 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answered(request: Request) -> Response:
            try:
                return await handler(request)
            except (CxrError, RequestValidationError, HTTPException) as exc:
                return protocol_response(refusal_of(exc, STATUS))
            except ClientDisconnect:
                return protocol_response(CLIENT_GONE)
            except Exception:  # answered here, or the app's handler answers in its own shape
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return protocol_response(Refusal(500, "internal_error",
                                                 "an unexpected error occurred; it was logged"))

        return answered
