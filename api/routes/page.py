"""The web page at ``/``: plain HTML, JavaScript and CSS from ``api/static``, no build step.

The page is open even when reads need a key: the key is typed into the page itself. Only the
files named here are served, so nothing else in the package folder is reachable.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from api.plumbing.body_guard import GuardedRoute

STATIC = Path(__file__).resolve().parent.parent / "static"
# The page's modules (app.js imports the others) and its style sheet.
MODULES = ("app.js", "common.js", "predict.js", "labelling.js", "models.js", "details.js",
           "live.js", "shadow.js", "datasets.js", "train.js", "chart.js")
ASSETS = dict.fromkeys(MODULES, "text/javascript; charset=utf-8") | {
    "style.css": "text/css; charset=utf-8"}

# Everything from this origin, nothing from elsewhere (the page must work offline); images
# also from data: (heat maps arrive as base64) and blob: (previews of the chosen file).
CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'self'")
# Revalidate each time, so a deploy is seen at the next load without stale JavaScript.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(route_class=GuardedRoute, tags=["page"], include_in_schema=False)


@router.get("/")
def get_page() -> FileResponse:
    """The web page: predict, browse and activate versions, upload data, retrain."""
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers=HEADERS | {"Content-Security-Policy": CSP})


@router.get("/static/{name}")
def get_asset(name: str) -> FileResponse:
    """The page's scripts and style sheet."""
    if name not in ASSETS:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)
