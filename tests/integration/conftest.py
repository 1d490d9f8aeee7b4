"""Real processes: a uvicorn API and a Celery worker, on Redis or the embedded broker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.services import Service, start_service


@pytest.fixture(params=["redis", "embedded"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """The API and a worker on Redis, then on the embedded SQLite broker."""
    broker = request.getfixturevalue("redis_url") if request.param == "redis" else None
    # Kept images: the flow files labelled answers into a dataset and fine-tunes on them.
    running = start_service(tmp_path, broker, extra_env={"CXR_KEEP_IMAGES": "true"})
    yield running
    running.stop()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        sys.stderr.write(running.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
