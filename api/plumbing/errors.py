"""Every failure shaped once (``refusal_of``: status, code, message, details, headers) and
answered in the service's JSON shape, ``{"error": {"code", "message", "details"?}}``; the
Open Inference Protocol's routes answer the same shaping in theirs (api/oip/routes.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from shared import errors
from shared.schemas import ErrorResponse

log = logging.getLogger(__name__)

STATUS: dict[type[errors.CxrError], int] = {
    errors.InvalidImage: 400,
    errors.UnsupportedImageFormat: 415,
    errors.UnsupportedDicom: 415,
    errors.ImageTooLarge: 413,
    errors.PayloadTooLarge: 413,
    errors.TooManyImages: 413,
    errors.InvalidDataset: 422,
    errors.WeightsUnavailable: 422,
    errors.UnknownClass: 422,
    errors.ClassMismatch: 422,
    errors.ConflictingParameters: 422,
    errors.NotAChestXray: 422,
    errors.ExplanationUnavailable: 422,
    errors.DatasetNotFound: 404,
    errors.ModelNotFound: 404,
    errors.JobNotFound: 404,
    errors.PredictionNotFound: 404,
    errors.ShadowNotFound: 404,
    errors.InUse: 409,
    errors.ConfirmationRequired: 409,
    errors.DatasetExists: 409,
    errors.JobNotCancellable: 409,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NoActiveModel: 503,
    errors.ServiceBusy: 503,
    errors.BrokerUnavailable: 503,
    errors.RegistryUnavailable: 503,
    errors.StorageFull: 507,
}

HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
              413: "payload_too_large", 415: "unsupported_media_type"}
HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


@dataclass(frozen=True)
class Refusal:
    """What a failure is answered with, whichever JSON shape carries it."""

    status: int
    code: str
    message: str
    details: list[dict[str, Any]] | None = None
    headers: Mapping[str, str] | None = None


def status_of(exc: errors.CxrError,
              statuses: Mapping[type[errors.CxrError], int] = STATUS) -> int:
    """The HTTP status a domain error is answered with."""
    return next((s for cls, s in statuses.items() if isinstance(exc, cls)), 500)


def refusal_of(exc: errors.CxrError | RequestValidationError | StarletteHTTPException,
               statuses: Mapping[type[errors.CxrError], int] = STATUS) -> Refusal:
    """The one shaping of a domain error, a request that failed validation or an HTTP
    error (a route's, or the body limit's met while the body streams in)."""
    if isinstance(exc, errors.CxrError):
        status = status_of(exc, statuses)
        if status >= 500 and status != 503:
            log.error("%s: %s", exc.code, exc.message)
        return Refusal(status, exc.code, exc.message, headers=retry_later(status))
    if isinstance(exc, RequestValidationError):
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                   for e in exc.errors()]
        message = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details)
        return Refusal(422, "validation_error", message, jsonable_encoder(details))
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return Refusal(exc.status_code, code, str(exc.detail), headers=exc.headers)


def retry_later(status: int) -> dict[str, str] | None:
    """A 503 is a busy or starting service: clients may come back."""
    return {"Retry-After": "5"} if status == 503 else None


def error_response(refusal: Refusal) -> JSONResponse:
    """The service's own shape: ``{"error": {"code", "message", "details"?}}``."""
    body: dict[str, Any] = {"code": refusal.code, "message": refusal.message}
    if refusal.details is not None:
        body["details"] = refusal.details
    return JSONResponse({"error": body}, status_code=refusal.status, headers=refusal.headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of a route's error answers."""
    return {s: {"model": ErrorResponse, "description": HTTPStatus(s).phrase} for s in statuses}


async def _shaped(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.CxrError | RequestValidationError)
    return error_response(refusal_of(exc))


async def _store_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("job store unreachable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(Refusal(503, "broker_unavailable",
                                  "the job queue and store are unreachable; retry later",
                                  headers=retry_later(503)))


def _allowed_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the OpenAPI document gives the path's operations.

    As in OpenAPI, a template with more literal segments takes precedence: /models/v/activate
    is POST /models/{version}/activate's, not GET /models/{version}/{artifact}'s.
    """
    segments = path.strip("/").split("/")
    best, methods = -1, set[str]()
    for template, item in app.openapi()["paths"].items():
        parts = template.strip("/").split("/")
        fixed = [i for i, part in enumerate(parts) if not part.startswith("{")]
        if len(parts) != len(segments) or any(parts[i] != segments[i] for i in fixed):
            continue
        if len(fixed) > best:
            best, methods = len(fixed), set()
        if len(fixed) == best:
            methods |= {method.upper() for method in item} & HTTP_METHODS
    return methods


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI's 400 for a body never read
        return error_response(CLIENT_GONE)
    refusal = refusal_of(exc)
    if exc.status_code == 405 and (methods := _allowed_methods(request.app, request.url.path)):
        # Starlette's Allow names the methods of the first route matching the path only:
        # POST for /datasets, GET for /jobs/{job_id}.
        refusal = replace(refusal, headers={**(refusal.headers or {}),
                                            "Allow": ", ".join(sorted(methods))})
    return error_response(refusal)


# A client that hung up before its request was read: nobody reads the answer, which is for
# the access log (499, as nginx says it).
CLIENT_GONE = Refusal(499, "client_disconnected",
                      "the client closed the connection before its request was read")


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    return error_response(CLIENT_GONE)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(Refusal(500, "internal_error",
                                  "an unexpected error occurred; it was logged"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.CxrError, _shaped)
    app.add_exception_handler(RequestValidationError, _shaped)
    app.add_exception_handler(redis.ConnectionError, _store_down)
    app.add_exception_handler(redis.TimeoutError, _store_down)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
