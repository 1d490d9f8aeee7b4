"""API keys: who may read and predict, and who may change what the service does.

Keys arrive in the ``X-API-Key`` header. The server holds only their sha256 (settings), and
compares the presented key's digest with every configured one in constant time, so neither
the match nor its position leaks through timing. Keys are never logged: nothing here logs,
and uvicorn's access log has no headers.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from shared.config import ApiKey, Settings, key_digest
from shared.errors import Forbidden, Unauthorized

HEADER = "X-API-Key"
_header = APIKeyHeader(name=HEADER, auto_error=False,
                       description="An API key; `cxr key` makes one and its settings line.")
PresentedKey = Annotated[str | None, Security(_header)]


def match_key(presented: str, keys: list[ApiKey]) -> ApiKey | None:
    digest = key_digest(presented)
    found = None
    for key in keys:  # no early exit
        if hmac.compare_digest(digest, key.sha256.lower()):
            found = key
    return found


def _identify(presented: str | None, keys: list[ApiKey]) -> ApiKey:
    if not presented:
        raise Unauthorized(f"this needs an API key in the {HEADER} header")
    found = match_key(presented, keys)
    if found is None:
        raise Unauthorized("the API key is not known to this service")
    return found


def check_admin(presented: str | None, settings: Settings) -> None:
    """Retrain, cancel, activate, evaluate, upload: an admin key, whatever else is open."""
    if _identify(presented, settings.api_keys).role != "admin":
        raise Forbidden("this needs an API key with the admin role")


def check_reader(presented: str | None, settings: Settings) -> None:
    """Predictions and reads: open, or any known key with CXR_REQUIRE_KEY_FOR_READS."""
    if settings.require_key_for_reads:
        _identify(presented, settings.api_keys)


# The dependencies that mark a route's role (api/plumbing/body_guard.py reads them off the
# route); the settings are the app's, as the body guard reads them.
def require_admin(request: Request, presented: PresentedKey) -> None:
    check_admin(presented, request.app.state.settings)


def require_reader(request: Request, presented: PresentedKey) -> None:
    check_reader(presented, request.app.state.settings)


Admin = [Depends(require_admin)]
Reader = [Depends(require_reader)]
