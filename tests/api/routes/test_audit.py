"""The audit trail over HTTP: every change route leaves one record naming the key (its name
and role, never the key), what was changed and how it ended; refusals (401, 403, 404) are
recorded too, reads are not; GET /audit filters and is for admins only; a store that fails
changes no answer."""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from shared.config import Settings
from shared.monitoring.audit import SqliteAuditStore
from shared.monitoring.records import LoggedPrediction
from shared.monitoring.stores import open_prediction_log
from shared.registry.local import LocalRegistry
from tests.helpers.env import ADMIN_KEY, LABELER_KEY, READER_KEY
from tests.helpers.versions import publish_random, republish, zip_bytes

CLASSES = ("COVID", "Normal")
AS_ADMIN, AS_LABELER = {"X-API-Key": ADMIN_KEY}, {"X-API-Key": LABELER_KEY}
AS_READER = {"X-API-Key": READER_KEY}


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


FILMS = zip_bytes({f"{label}/{n}.png": png(10 * i + n)
                   for i, label in enumerate(CLASSES) for n in range(2)})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    # One batch size to warm: a version loads (and the app stops) sooner.
    with TestClient(create_app(settings.model_copy(update={"batch_max_size": 1}))) as test_client:
        yield test_client


def _audit(client: TestClient, **params: object) -> list[dict[str, object]]:
    answer = client.get("/audit", params=params, headers=AS_ADMIN)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["records"])


def _ok(answer, status: int = 200) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert answer.status_code == status, answer.text
    return dict(answer.json())


def test_every_change_leaves_a_record_naming_the_key_and_what_it_changed(
        client: TestClient, settings: Settings) -> None:
    registry = LocalRegistry(settings.models_dir)
    active = publish_random(registry, seed=1, classes=CLASSES, activate=True)
    candidate, spare = (republish(registry, active, registry, {}, activate=False)
                        for _ in range(2))
    open_prediction_log(settings).add([LoggedPrediction(
        prediction_id="pred0001", time=datetime.now(UTC), version=active, label="COVID",
        probabilities={"COVID": 0.9, "Normal": 0.1}, reliable=True, image_sha256="0" * 64,
        source="api")])
    traced = {**AS_ADMIN, "X-Request-ID": "trace-upload-1"}

    _ok(client.post("/datasets", data={"name": "films"}, files={"file": ("f.zip", FILMS)},
                    headers=traced), 201)
    job = _ok(client.post("/retrain", json={"dataset": "films", "base_weights": "none"},
                          headers=AS_ADMIN), 202)["job_id"]
    _ok(client.delete(f"/jobs/{job}", headers=AS_ADMIN))
    evaluation = _ok(client.post(f"/models/{candidate}/evaluate", json={"dataset": "films"},
                                 headers=AS_ADMIN), 202)["job_id"]
    _ok(client.delete(f"/jobs/{evaluation}", headers=AS_ADMIN))  # so that films may go
    _ok(client.post(f"/models/{candidate}/shadow", headers=AS_ADMIN))
    _ok(client.delete(f"/models/{candidate}/shadow", headers=AS_ADMIN))
    _ok(client.post("/predictions/pred0001/label", json={"label": "normal"},
                    headers=AS_LABELER))
    # force: a random version has no test interval (tests/api/routes/test_models.py)
    _ok(client.post(f"/models/{candidate}/activate", params={"force": "true"},
                    headers=AS_ADMIN))
    _ok(client.delete(f"/models/{spare}", headers=AS_ADMIN))
    _ok(client.delete("/datasets/films", headers=AS_ADMIN))

    records = list(reversed(_audit(client)))  # oldest first
    assert [(r["action"], r["target"], r["actor"], r["role"], r["outcome"], r["status"])
            for r in records] == [
        ("dataset.upload", "films", "admin", "admin", "ok", 201),
        ("retrain", "films", "admin", "admin", "ok", 202),
        ("job.cancel", job, "admin", "admin", "ok", 200),
        ("evaluate", candidate, "admin", "admin", "ok", 202),
        ("job.cancel", evaluation, "admin", "admin", "ok", 200),
        ("shadow.start", candidate, "admin", "admin", "ok", 200),
        ("shadow.end", candidate, "admin", "admin", "ok", 200),
        ("label", "pred0001", "labeler", "labeler", "ok", 200),
        ("activate", candidate, "admin", "admin", "ok", 200),
        ("model.delete", spare, "admin", "admin", "ok", 200),
        ("dataset.delete", "films", "admin", "admin", "ok", 200),
    ]
    assert records[0]["request_id"] == "trace-upload-1"
    assert all(r["request_id"] for r in records)
    assert records[1]["detail"] == f"job {job}" and records[3]["detail"] == f"job {evaluation}"
    assert records[7]["detail"] == "class Normal"
    assert str(records[8]["detail"]).startswith("forced: ")
    trail = str(records)
    assert all(key not in trail for key in (ADMIN_KEY, LABELER_KEY, READER_KEY))


def test_refused_attempts_are_recorded_and_reads_are_not(client: TestClient) -> None:
    assert client.post("/retrain", json={"dataset": "films"}).status_code == 401
    assert client.post("/retrain", json={"dataset": "films"},
                       headers={"X-API-Key": "made-up"}).status_code == 401
    assert client.delete("/datasets/films", headers=AS_READER).status_code == 403
    assert client.post("/models/20200101-000000-abcdef/activate",
                       headers=AS_ADMIN).status_code == 404
    assert client.post("/predictions/pred0001/label", json={"label": "COVID"},
                       headers=AS_READER).status_code == 403
    for read in ("/models", "/datasets", "/jobs", "/predictions"):
        assert client.get(read, headers=AS_ADMIN).status_code == 200, read

    records = list(reversed(_audit(client)))
    assert [(r["action"], r["actor"], r["role"], r["outcome"], r["status"], r["error"])
            for r in records] == [
        ("retrain", None, None, "refused", 401, "unauthorized"),
        ("retrain", None, None, "refused", 401, "unauthorized"),
        ("dataset.delete", "reader", "reader", "refused", 403, "forbidden"),
        ("activate", "admin", "admin", "refused", 404, "model_not_found"),
        ("label", "reader", "reader", "refused", 403, "forbidden"),
    ]
    assert records[2]["target"] == "films" and records[4]["target"] == "pred0001"


def test_the_trail_is_filtered_and_only_for_admins(client: TestClient) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    client.delete("/datasets/a", headers=AS_READER)
    client.delete("/datasets/b", headers=AS_ADMIN)  # 404: refused too
    client.post("/models/20200101-000000-abcdef/activate")

    assert [r["target"] for r in _audit(client, action="dataset.delete")] == ["b", "a"]
    assert [r["target"] for r in _audit(client, actor="reader")] == ["a"]
    assert [r["action"] for r in _audit(client, target="20200101-000000-abcdef")] == [
        "activate"]
    assert len(_audit(client, outcome="refused")) == 3 and _audit(client, outcome="ok") == []
    assert len(_audit(client, since=before.isoformat())) == 3
    assert _audit(client, since=(before + timedelta(hours=1)).isoformat()) == []
    assert [r["target"] for r in _audit(client, limit=1)] == ["20200101-000000-abcdef"]
    for bad in ({"limit": 0}, {"limit": 5001}, {"outcome": "maybe"}):
        assert client.get("/audit", params=bad, headers=AS_ADMIN).status_code == 422, bad
    assert client.get("/audit").status_code == 401
    for key in (READER_KEY, LABELER_KEY):
        assert client.get("/audit", headers={"X-API-Key": key}).status_code == 403


def test_a_trail_that_cannot_be_written_changes_no_answer(
        client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = SqliteAuditStore(tmp_path / "broken" / "audit.sqlite", 1.0)
    shutil.rmtree(tmp_path / "broken")
    (tmp_path / "broken" / "audit.sqlite").mkdir(parents=True)  # no database can open here
    client.app.state.audit = broken  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR):
        refused = client.delete("/datasets/films", headers=AS_ADMIN)
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "dataset_not_found")
    assert "could not append the audit record of dataset.delete films" in caplog.text
