"""API keys: who may read and predict, who may label answers, and who may change what the
service does.

Keys arrive in the ``X-API-Key`` header. The server holds only their sha256 (settings), and
compares the presented key's digest with every configured one in constant time, so neither
the match nor its position leaks through timing. Keys are never logged: what is logged here
names none, and uvicorn's access log has no headers. The key a check identified (or None) is left on
``request.state.api_key``, refusals included, for the audit trail to name who asked.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from shared.config import ApiKey, Settings, key_digest
from shared.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

HEADER = "X-API-Key"
# Said at start-up and in every 401 while no key is configured: otherwise a valid key from
# another deployment reads as a mistyped one.
NO_KEYS = ("this service has no API keys configured (CXR_API_KEYS): every change answers "
           "401 until one is; make one with `cxr key` and restart the service with the line "
           "it prints")
_header = APIKeyHeader(name=HEADER, auto_error=False,
                       description="An API key; `cxr key` makes one and its settings line.")
PresentedKey = Annotated[str | None, Security(_header)]

# What a route needs: admin for every change, labeler (or admin) to label answers, reader
# for reads and predictions. A stronger key passes a weaker route's check.
Role = Literal["admin", "labeler", "reader"]
_LETS_IN: dict[Role, tuple[str, ...]] = {"admin": ("admin",),
                                         "labeler": ("admin", "labeler"),
                                         "reader": ("admin", "labeler", "reader")}


def match_key(presented: str, keys: list[ApiKey]) -> ApiKey | None:
    digest = key_digest(presented)
    found = None
    for key in keys:  # no early exit
        if hmac.compare_digest(digest, key.sha256.lower()):
            found = key
    return found


def authorize(request: Request, presented: str | None, role: Role) -> ApiKey:
    """The known key that may use a route marked ``role``: 401 without one, 403 for a key of
    a weaker role."""
    settings: Settings = request.app.state.settings
    found = match_key(presented, settings.api_keys) if presented else None
    request.state.api_key = found
    if not settings.api_keys:
        raise Unauthorized(NO_KEYS)
    if not presented:
        raise Unauthorized(f"this needs an API key in the {HEADER} header")
    if found is None:
        raise Unauthorized("the API key is not known to this service")
    if found.role not in _LETS_IN[role]:
        raise Forbidden(f"this needs an API key with the {' or '.join(_LETS_IN[role])} role")
    return found


def warn_if_no_keys(settings: Settings) -> None:
    """Say at start-up that no change route can be used: no API key is configured."""
    if not settings.api_keys:
        log.warning("no API keys configured: every change route answers 401; make one with "
                    "`cxr key` and set CXR_API_KEYS to what it prints")


# The dependencies that mark a route's role (api/plumbing/body_guard.py reads them off the
# route and calls them before the body is read); the settings are the app's.
def require_admin(request: Request, presented: PresentedKey) -> ApiKey:
    """Retrain, cancel, activate, evaluate, upload, shadow, delete: an admin key."""
    return authorize(request, presented, "admin")


def require_labeler(request: Request, presented: PresentedKey) -> ApiKey:
    """Label an answer: a labeler or an admin key."""
    return authorize(request, presented, "labeler")


def require_reader(request: Request, presented: PresentedKey) -> ApiKey | None:
    """Predictions and reads: open (None), or any known key with CXR_REQUIRE_KEY_FOR_READS."""
    if not request.app.state.settings.require_key_for_reads:
        return None
    return authorize(request, presented, "reader")


Admin = [Depends(require_admin)]
Reader = [Depends(require_reader)]
# The key that labels, as a parameter of the route that records its name.
LabelerKey = Annotated[ApiKey, Depends(require_labeler)]
