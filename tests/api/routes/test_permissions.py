"""Who may change what: every route that changes something (each audited) refuses a reader
key with 403 and changes nothing; a labeler key may label answers and nothing else."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from api.plumbing.audit_trail import ACTIONS
from shared.config import Settings
from shared.job_store import open_job_store
from shared.monitoring.records import LoggedPrediction
from shared.monitoring.stores import open_prediction_log
from shared.registry.local import LocalRegistry
from shared.training_params import TrainingParams
from tests.helpers.env import ADMIN_KEY, LABELER_KEY, READER_KEY
from tests.helpers.versions import publish_random, republish, wait_ready

CLASSES = ("COVID", "Normal")
READS = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class Service:
    client: TestClient
    params: dict[str, str]  # a real value of each path parameter


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    """An active version and a candidate, a dataset, a queued job and an answer: something
    for every change route to change."""
    registry = LocalRegistry(settings.models_dir)
    active = publish_random(registry, seed=1, classes=CLASSES, activate=True)
    candidate = republish(registry, active, registry, {}, activate=False)
    for label in CLASSES:
        (settings.data_dir / "films" / label).mkdir(parents=True)
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(buffer, format="PNG")
        (settings.data_dir / "films" / label / "0.png").write_bytes(buffer.getvalue())
    open_job_store(settings).create("job0001", TrainingParams(dataset="films"))
    open_prediction_log(settings).add([LoggedPrediction(
        prediction_id="pred0001", time=datetime.now(UTC), version=candidate, label="COVID",
        probabilities={"COVID": 0.9, "Normal": 0.1}, reliable=True, image_sha256="0" * 64,
        source="api")])
    # One batch size to warm: the active version loads (and the app stops) sooner.
    with TestClient(create_app(settings.model_copy(update={"batch_max_size": 1}))) as client:
        # loaded before the state is read: /models says which version serves, and a load
        # finishing between two reads would look like a change
        wait_ready(client)
        yield Service(client, {"version": candidate, "name": "films", "job_id": "job0001",
                               "prediction_id": "pred0001"})


def change_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, template) of every route but reads and predictions (open to readers), as
    the OpenAPI document lists them."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return sorted((method.upper(), path) for path, operations in paths.items()
                  for method in operations if method.upper() not in READS
                  and path != "/predict" and not path.endswith("/infer"))


def state(client: TestClient) -> list[object]:
    """Everything a change route could change, as the reads show it."""
    return [client.get(path, headers={"X-API-Key": ADMIN_KEY}).json()
            for path in ("/models", "/datasets", "/jobs", "/predictions")]


def _call(service: Service, method: str, template: str, key: str) -> int:
    response = service.client.request(method, template.format(**service.params),
                                      headers={"X-API-Key": key})
    return response.status_code


def test_a_reader_key_can_change_nothing(service: Service) -> None:
    routes = change_routes(service.client)
    assert routes == sorted(ACTIONS)  # and every one of them is audited
    before = state(service.client)
    for method, template in routes:
        assert _call(service, method, template, READER_KEY) == 403, (method, template)
    assert state(service.client) == before


def test_a_labeler_key_may_label_and_nothing_else(service: Service) -> None:
    before = state(service.client)
    for method, template in change_routes(service.client):
        if ACTIONS[(method, template)] != "label":
            assert _call(service, method, template, LABELER_KEY) == 403, (method, template)
    assert state(service.client) == before
    labelled = service.client.post("/predictions/pred0001/label", json={"label": "Normal"},
                                   headers={"X-API-Key": LABELER_KEY})
    assert labelled.status_code == 200, labelled.text
