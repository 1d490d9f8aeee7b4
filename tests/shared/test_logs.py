"""Log lines: JSON objects tagged with the request and the job, or text."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
import time
import warnings
from collections.abc import Iterator

import pytest

from shared.logs import accept_request_id, configure_logging, log_context


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    yield out
    root.handlers, root.level = handlers, level
    logging.captureWarnings(False)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_request_and_the_job(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream)
    log = logging.getLogger("cxr.test")
    with log_context(request="req-1"):
        log.info("queued %s", "a job", extra={"status": 202})
        with log_context(job="job-9"):
            log.warning("epoch %d done", 3, extra={"loss": 0.5})
    log.debug("not at info")
    log.info("outside")
    first, second, third = _lines(stream)
    assert first["message"] == "queued a job" and first["status"] == 202
    assert (first["request_id"], first.get("job_id")) == ("req-1", None)
    assert (second["level"], second["request_id"], second["job_id"]) == ("WARNING", "req-1",
                                                                         "job-9")
    assert second["loss"] == 0.5 and second["logger"] == "cxr.test"
    assert "request_id" not in third and "job_id" not in third  # no nulls
    assert str(first["time"]).endswith("+00:00") and list(first)[0] == "time"


def test_configuring_again_replaces_only_its_own_handler(stream: io.StringIO) -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    configure_logging("info", "json", stream)
    configure_logging("info", "json", stream)
    logging.getLogger("cxr.test").info("once")
    assert [line["message"] for line in _lines(stream)] == ["once"]
    assert other in logging.getLogger().handlers


def test_warnings_and_exceptions_are_json_too(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream)
    warnings.warn("a library is unhappy", UserWarning, stacklevel=1)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("cxr.test").exception("failed")
    warned, failed = _lines(stream)
    assert warned["logger"] == "py.warnings" and "a library is unhappy" in str(warned["message"])
    assert "ValueError: boom" in str(failed["exc_info"])


def test_text_format_for_a_terminal(stream: io.StringIO) -> None:
    configure_logging("info", "text", stream)
    with log_context(request="req-2", job="job-3"):
        logging.getLogger("cxr.test").info("hello")
    logging.getLogger("cxr.test").info("alone")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("INFO cxr.test [req-2 job-3] hello")
    assert second.endswith("INFO cxr.test alone")


@pytest.mark.parametrize("sent", [None, "", "has space", "x" * 129, "new\nline", "é"])
def test_unusable_request_ids_are_replaced(sent: str | None) -> None:
    made = accept_request_id(sent)
    assert made != sent and len(made) == 32


def test_a_sane_request_id_is_kept() -> None:
    assert accept_request_id("pacs-7f3:42_a.b-c") == "pacs-7f3:42_a.b-c"


def test_celerys_pool_lines_are_json_once(stream: io.StringIO) -> None:
    pool = logging.getLogger("multiprocessing")
    before = (list(pool.handlers), pool.propagate)
    try:
        configure_logging("info", "json", stream)
        pool.error("Process %r pid:%r exited with %r", "ForkPoolWorker-1", 42, "signal 9")
        [line] = _lines(stream)
        assert line["logger"] == "multiprocessing" and "exited with" in str(line["message"])
    finally:
        pool.handlers, pool.propagate = before


def test_json_lines_carry_no_terminal_escapes_even_on_a_terminal() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # An in-process uvicorn started by an earlier test of this process may have left its
    # logger at its own level: this test's line must reach the handler whatever ran before.
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_state = (uvicorn_error.level, uvicorn_error.disabled)
    uvicorn_error.setLevel(logging.NOTSET)
    uvicorn_error.disabled = False
    main, side = pty.openpty()
    terminal = os.fdopen(side, "w")
    try:
        assert terminal.isatty()
        configure_logging("info", "json", terminal)
        # as uvicorn logs: a coloured copy of the message in the extra field color_message
        logging.getLogger("uvicorn.error").info(
            "Started server process [%d]", 7,
            extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
        logging.getLogger("cxr.test").warning("a \x1b[1mbold\x1b[0m word",
                                              extra={"detail": {"shown": "\x1b[31mred\x1b[0m"}})
        terminal.flush()
        written = _read_lines(main, 2)
    finally:
        root.handlers, root.level = handlers, level
        uvicorn_error.setLevel(uvicorn_state[0])
        uvicorn_error.disabled = uvicorn_state[1]
        terminal.close()
        os.close(main)
    assert "\x1b" not in written and "\\u001b" not in written, written
    first, second = (json.loads(line) for line in written.splitlines())
    assert first["message"] == "Started server process [7]" and "color_message" not in first
    assert second["message"] == "a bold word" and second["detail"] == {"shown": "red"}


def _read_lines(fd: int, count: int) -> str:
    """What a pseudo-terminal holds once ``count`` lines have arrived: one read may return
    only the first write."""
    written, deadline = "", time.monotonic() + 10
    while written.count("\n") < count and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            written += os.read(fd, 65536).decode()
    return written
