"""Log lines for operators: one JSON object per line (``CXR_LOG_FORMAT=json``) or plain text,
each naming the request and the job it belongs to.

A request id comes from the client's ``X-Request-ID`` (or is made up), is answered in the same
header, is stored with a job the request queued, and is set again in the worker that runs the
job, so one id finds the request and its whole training run. Nothing here logs a request's
body or headers: no image, no DICOM header value, no API key reaches a log line.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

request_id: ContextVar[str | None] = ContextVar("cxr_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("cxr_job_id", default=None)

# What a client may send as its own request id; anything else is replaced, never logged.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(context)s%(message)s"
# Loggers that come with handlers of their own; theirs would print every line twice.
OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery")
# Terminal escape sequences (colours, cursor moves): a log record is read by programs, and a
# JSON line with them is noise there. uvicorn adds a coloured copy of some messages to every
# record it logs, as the extra field ``color_message``.
ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()*+][0-~]"
                     r"|[@-Z\\-_])?")  # CSI, OSC, a charset, any other; a lone ESC too
TERMINAL_ONLY = ("color_message",)


def accept_request_id(sent: str | None) -> str:
    """The client's request id when it is a sane token, else a new one."""
    return sent if sent and REQUEST_ID.match(sent) else uuid.uuid4().hex


@contextmanager
def log_context(*, request: str | None = None, job: str | None = None) -> Iterator[None]:
    """Tag every line logged inside with this request and job (where given)."""
    tokens = []
    if request is not None:
        tokens.append((request_id, request_id.set(request)))
    if job is not None:
        tokens.append((job_id, job_id.set(job)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("request_id", request_id), ("job_id", job_id)):
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class _Json(JsonFormatter):
    """Fields: time (UTC, ISO 8601), level, logger, message, request_id, job_id and the
    record's extras; fields without a value are left out."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds")
        super().add_fields(log_data, record, message_dict)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: _plain(value) for key, value in log_data.items()
                if value is not None and key not in TERMINAL_ONLY}


def _plain(value: Any) -> Any:
    """``value`` without terminal escape sequences, in its strings at any depth."""
    if isinstance(value, str):
        return ESCAPES.sub("", value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class _Text(logging.Formatter):
    """For a terminal: the request and job in brackets, where there are any."""

    def format(self, record: logging.LogRecord) -> str:
        ids = [str(i) for i in (getattr(record, "request_id", None),
                                getattr(record, "job_id", None)) if i]
        record.context = f"[{' '.join(ids)}] " if ids else ""
        return super().format(record)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """Ours, so that configuring again replaces it and leaves anyone else's handlers."""


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every logger's lines to ``stream`` (stderr) in the chosen format."""
    handler = _Handler(stream or sys.stderr)
    handler.addFilter(_Context())
    if fmt == "json":
        handler.setFormatter(_Json("{levelname}{name}{message}", style="{",
                                   rename_fields={"levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(_Text(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _Handler)] + [handler]
    root.setLevel(level.upper())
    # billiard (Celery's pool) logs to "multiprocessing" without propagating; unhandled, its
    # lines (a pool process killed) would reach stderr as bare text.
    pool = logging.getLogger("multiprocessing")
    pool.handlers = [h for h in pool.handlers if not isinstance(h, _Handler)] + [handler]
    pool.propagate = False
    logging.captureWarnings(True)  # Python warnings become log lines too
    for name in OWN_HANDLERS:
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The API logs its own access lines (api.plumbing.request_log), without the client's address.
    logging.getLogger("uvicorn.access").propagate = False
