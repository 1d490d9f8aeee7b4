"""The long-running commands (`cxr serve`, `cxr worker`, `cxr up`) and `cxr key`.

They start ``api`` and ``worker`` as separate processes (or import one of them lazily), so
the two packages still never import each other.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer

from cxr_cli.errors import require_extras
from cxr_cli.runtime import Verbose, load_settings, quiet_tensorflow, start_tensorflow


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [CXR_HOST].")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535,
                                             help="Port to listen on [CXR_PORT].")] = None,
    verbose: Verbose = False,
) -> None:
    """Run the HTTP API (uvicorn) on CXR_HOST:CXR_PORT (8000 on 127.0.0.1 by default)."""
    require_extras("cxr serve", "api")
    settings = load_settings()
    # Not loaded now: the API listens at once and loads TensorFlow with its first model,
    # in another thread (quietly all the same: quiet_tensorflow watches for its import).
    quiet_tensorflow(verbose)
    import uvicorn

    from api.plumbing.head_limits import bounded_protocol
    from shared.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    # log_config=None: uvicorn's lines go through ours; the API logs its own access lines.
    uvicorn.run("api.main:create_app", factory=True, host=host or settings.host,
                port=port or settings.port,
                log_level=settings.log_level, log_config=None, access_log=False,
                http=bounded_protocol(settings.max_header_bytes, settings.max_header_fields))


def worker(verbose: Verbose = False) -> None:
    """Run one Celery training worker on the `training` queue."""
    require_extras("cxr worker", "worker")
    settings = load_settings()
    start_tensorflow(verbose)
    from shared.logs import configure_logging
    from shared.task_queue import TRAINING_QUEUE
    from worker.celery_app import app as celery_app

    configure_logging(settings.log_level, settings.log_format)
    # Celery's banner is for a terminal; JSON logs get its facts from the log lines.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    # No mingle or gossip: jobs are cancelled through the job store, not Celery's revokes, so
    # a starting worker has nothing to sync with its peers and need not wait a second for them.
    celery_app.worker_main([*quiet, "worker", "--queues", TRAINING_QUEUE, "--concurrency", "1",
                            "--pool", "prefork", "--without-mingle", "--without-gossip",
                            "--loglevel", settings.log_level.upper()])


def up(verbose: Verbose = False) -> None:
    """Run the API and one worker together until interrupted."""
    require_extras("cxr up", "api", "worker")
    load_settings()  # a wrong CXR_ variable fails here once, not in both children
    children = [subprocess.Popen([sys.executable, "-m", "cxr_cli", name,
                                  *(["--verbose"] if verbose else [])])
                for name in ("worker", "serve")]

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        stop()
        for child in children:
            child.wait(timeout=60)
    raise typer.Exit(max((c.returncode or 0) for c in children))


def key_lines(entries: list[dict[str, str]]) -> tuple[str, str]:
    """CXR_API_KEYS holding ``entries``: the shell's ``export`` line, and the line of a
    docker compose ``.env`` file (no ``export``). One value serves both: JSON in single
    quotes, which neither a shell nor compose reads into, with its own single quotes (a
    holder's name may have one) written as JSON's \\u0027, so no quote needs escaping."""
    value = "'" + json.dumps(entries).replace("'", "\\u0027") + "'"
    return f"export CXR_API_KEYS={value}", f"CXR_API_KEYS={value}"


def key(
    name: Annotated[str, typer.Option(help="A name for the key's holder.")] = "admin",
    role: Annotated[str, typer.Option(
        help="admin (may change things), labeler (labels answers) or reader.")] = "admin",
) -> None:
    """Make a new API key: print it once, and the lines that set CXR_API_KEYS to its hash,
    for a shell and for docker compose's .env file."""
    import secrets

    from shared.config import key_digest

    if role not in ("admin", "labeler", "reader"):
        raise typer.BadParameter("role is admin, labeler or reader", param_hint="--role")
    secret = secrets.token_urlsafe(32)
    shell, dotenv = key_lines([{"name": name, "sha256": key_digest(secret), "role": role}])
    typer.echo(f"key (send as X-API-Key; shown only now): {secret}")
    typer.echo("the service holds only its hash, in CXR_API_KEYS (a list: to keep other "
               "keys, add this entry to theirs)")
    typer.echo("for a shell, before `make run` or `cxr up`:")
    typer.echo(shell)
    typer.echo("for docker compose, a line of its .env file as it is (the same value, "
               "without `export`):")
    typer.echo(dotenv)
