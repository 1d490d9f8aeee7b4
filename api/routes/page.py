"""The web page at ``/``: plain HTML, JavaScript and CSS from ``api/static``, no build step;
its icon at ``/favicon.ico``; and ReDoc at ``/redoc``, from the package's files only.

The page is open even when reads need a key: the key is typed into the page itself. Only the
files named here are served, so nothing else in the package folder is reachable.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException

from api.plumbing.body_guard import GuardedRoute

STATIC = Path(__file__).resolve().parent.parent / "static"
# The page's modules (app.js imports the others) and its style sheet.
MODULES = ("app.js", "common.js", "predict.js", "answer.js", "no_model.js", "labelling.js",
           "models.js", "activate.js", "dialog.js", "details.js", "reliable.js", "live.js",
           "shadow.js", "datasets.js", "train.js", "train_form.js", "chart.js")
ASSETS = dict.fromkeys(MODULES, "text/javascript; charset=utf-8") | {
    "style.css": "text/css; charset=utf-8"}
FAVICON = "favicon.ico"
FAVICON_URL = f"/{FAVICON}"
# Where fastapi_offline mounts Swagger UI's and ReDoc's files (its default static_url).
OFFLINE_DOCS = "/static-offline-docs"

# Everything from this origin, nothing from elsewhere (the page must work offline); images
# also from data: (heat maps arrive as base64) and blob: (previews of the chosen file).
CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'self'")
# ReDoc draws its maker's logo from cdn.redoc.ly whatever its options say: the browser is
# told to load nothing from elsewhere, so no request leaves for it. ReDoc styles its page
# inline and runs its search in a worker made from a blob.
REDOC_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
             "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
             "frame-ancestors 'self'")
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


@router.get(FAVICON_URL)
def get_favicon() -> FileResponse:
    """The icon browsers ask for with every page (the page's, /docs' and /redoc's)."""
    return FileResponse(STATIC / FAVICON, media_type="image/x-icon", headers=HEADERS)


@router.get("/redoc")
def get_redoc(request: Request) -> HTMLResponse:
    """The API's reference as ReDoc draws it, from the package's copy of ReDoc."""
    root = request.scope.get("root_path", "")
    page = get_redoc_html(openapi_url=f"{root}{request.app.openapi_url}",
                          title=f"{request.app.title} - ReDoc",
                          redoc_js_url=f"{root}{OFFLINE_DOCS}/redoc.standalone.js",
                          redoc_favicon_url=f"{root}{FAVICON_URL}", with_google_fonts=False)
    page.headers["Content-Security-Policy"] = REDOC_CSP
    return page
