"""Schemathesis against the service's own OpenAPI schema: every operation, in-process.

Every generated request must get an answer that is not a 5xx and that is what the schema
documents: its status code, content type, headers and body. The app is the real one (real
registry, SQLite job store and embedded broker with no worker, so /retrain only queues)
serving a tiny random-weight model, so that /predict and the model routes can answer 200.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode

from api.main import create_app
from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers.env import ADMIN_KEY, API_KEYS, READER_KEY
from tests.helpers.versions import publish_random, wait_ready, zip_bytes

DATASET = "fuzz-set"
ARTIFACTS = {"curves.png": "curves.png", "card": "card.html", "card.md": "card.md"}
# Bounded: tens of examples per operation, and no example database written into the repo.
# The health checks judge the speed of generation, which is not under test.
FUZZ = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (40, 40), value).save(buffer, format="PNG")
    return buffer.getvalue()


def _dataset_files() -> dict[str, bytes]:
    """Two classes of three images: the smallest dataset that can be trained on."""
    return {f"{label}/{i}.png": _png(value + i)
            for label, value in (("a", 40), ("b", 200)) for i in range(3)}


# A request the schema allows may still be refused for what no schema can say: bytes that
# are no image (400, 415) or too many pixels (413), a zip that is no dataset, a dataset too
# small to train on or base weights the server lacks (422). These count as accepted.
CONTENT_ERRORS = [("/predict", [400, 413, 415, 422]), ("/datasets", [413, 422]),
                  ("/retrain", [422]), ("/models/{version}/evaluate", [422])]
CONFIG = schemathesis.Config.from_dict({
    # Keys are given per call below, not drawn by the fuzzer; and unknown query parameters
    # are ignored, as HTTP APIs commonly do, so they are not counted as invalid requests.
    "generation": {"with-security-parameters": False, "allow-extra-parameters": False},
    "operations": [{"include-path": path, "checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", 401, 403, 404, 409, *statuses]}}}
        for path, statuses in CONTENT_ERRORS],
})

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class LifespanRunElsewhere:
    """The app under test as schemathesis reaches it: the fixture's app, whose lifespan the
    fixture runs once. Schemathesis would start it on the first request and end it after
    each test, loading the model again for every operation."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            assert self.app is not None, "a request before the fixture started the app"
            return await self.app(scope, receive, send)
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


SERVED = LifespanRunElsewhere()
# The document depends on the routes alone, so an app that never starts can give it.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi(), config=CONFIG)
schema.app = SERVED  # each operation, and each check's own requests, go to it in-process


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Starts the app with an active 32 px model, a dataset and a queued job; names them."""
    root = tmp_path_factory.mktemp("fuzz")
    # Reads need a key as well, so that reads without one answer 401 and get checked.
    config = Settings(data_dir=root / "data", models_dir=root / "models", state_dir=root / "state",
                      broker_url=None, api_keys=API_KEYS, require_key_for_reads=True)
    registry = LocalRegistry(config.models_dir)
    version = publish_random(registry, seed=11)
    registry.activate(version)
    for name, file in ARTIFACTS.items():  # what training writes beside the model
        (registry.version_dir(version) / file).write_bytes(
            _png(90) if name.endswith(".png") else f"# {name}\n".encode())
    for path, data in _dataset_files().items():
        (config.data_dir / DATASET / path).parent.mkdir(parents=True, exist_ok=True)
        (config.data_dir / DATASET / path).write_bytes(data)
    app = create_app(config)
    with TestClient(app, headers={"X-API-Key": ADMIN_KEY}) as client:
        wait_ready(client)
        job = client.post("/retrain", json={"dataset": DATASET, "base_weights": "none"})
        SERVED.app = app
        try:
            yield {"version": version, "name": DATASET, "job_id": job.json()["job_id"]}
        finally:
            SERVED.app = None


def _aimed(case: schemathesis.Case, known: dict[str, str]) -> schemathesis.Case:
    """The case naming what exists and uploading what decodes, to reach 2xx answers too.

    New containers, not edits in place, so that schemathesis judges the request anew."""
    if case.path_parameters:
        case.path_parameters = {key: known.get(key, value)
                                for key, value in case.path_parameters.items()}
    if isinstance(case.body, dict) and "dataset" in case.body:
        case.body = {**case.body, "dataset": DATASET}
    if isinstance(case.body, dict) and "file" in case.body:
        # The fuzzer fills an OpenAPI 3.1 upload with text and would take bytes put in its
        # place for an invalid request: an explicit case, judged by its answer alone.
        upload = zip_bytes(_dataset_files()) if case.path == "/datasets" else _png(128)
        return case.operation.Case(query=case.query, media_type=case.media_type,
                                   body={**case.body, "file": upload})
    return case


def _several_uploads(case: schemathesis.Case) -> bool:
    """Whether a case sends several `file` parts. Each part is bytes, whatever the fuzzer
    drew for it (a null or a number goes as the text "null" or "7"): several parts are
    several images, each answered on its own (a bad one with its error) in a 200, so a
    case the fuzzer means to be invalid there is a valid request after all."""
    files = case.body.get("file") if isinstance(case.body, dict) else None
    return isinstance(files, list) and len(files) > 1


def _drawn(case: schemathesis.Case) -> None:
    if case.meta is not None and case.meta.generation.mode is GenerationMode.NEGATIVE:
        assume(not _several_uploads(case))


@schema.parametrize()
@schema.given(aim=st.booleans(), artifact=st.sampled_from(sorted(ARTIFACTS)))
@FUZZ
def test_every_operation_as_admin(case: schemathesis.Case, aim: bool, artifact: str,
                                  known: dict[str, str]) -> None:
    _drawn(case)
    # Valid requests only: one generated to be invalid must stay so.
    if aim and case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE:
        case = _aimed(case, {**known, "artifact": artifact})
    case.call_and_validate(headers={"X-API-Key": ADMIN_KEY})


@schema.parametrize()
@settings(FUZZ, max_examples=8)
def test_every_refusal_for_want_of_a_key_is_documented(case: schemathesis.Case,
                                                       known: dict[str, str]) -> None:
    _drawn(case)
    for key in (None, "made-up-key", READER_KEY):
        case.call_and_validate(headers={"X-API-Key": key} if key else None)
