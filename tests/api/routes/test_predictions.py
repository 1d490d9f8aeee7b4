"""The prediction log over HTTP: answers listed by filter, labels from a labeler or an admin
key (a reader's refused), a label in any spelling of the version's class, a kept image filed
into the labels dataset under its class and moved by a relabel, and the version's live
figures counting the labels."""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from shared.config import Settings
from shared.monitoring.kept_images import KeptImages
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.prediction_log_sqlite import SqlitePredictionLog
from shared.monitoring.records import LoggedPrediction
from shared.monitoring.stores import open_prediction_log
from shared.registry.local import LocalRegistry
from tests.helpers.env import ADMIN_KEY, LABELER_KEY, READER_KEY
from tests.helpers.versions import publish_random, republish, wait_ready

CLASSES = ("COVID", "Normal", "Viral Pneumonia")
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Served:
    client: TestClient
    settings: Settings
    log: PredictionLog
    version: str
    other: str


def logged(n: int, version: str, label: str = "COVID", *, reliable: bool = True,
           minutes_ago: float = 0, kept: bool = False) -> LoggedPrediction:
    return LoggedPrediction(
        prediction_id=f"pred{n:04d}", time=NOW - timedelta(minutes=minutes_ago + n / 100),
        version=version, label=label, probabilities=dict.fromkeys(CLASSES, 1 / 3),
        reliable=reliable, image_sha256=f"{n:064x}", source="api", image_kept=kept)


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    """Two versions of the three classes, and answers of each in the log: pred0000-0003 of
    the first (pred0003 unreliable and an hour old, pred0000 with its image kept), pred0004
    of the second."""
    registry = LocalRegistry(settings.models_dir)
    version = publish_random(registry, seed=1, classes=CLASSES, activate=True)
    other = republish(registry, version, registry, {}, activate=False)
    log = open_prediction_log(settings)
    log.add([logged(0, version, kept=True), logged(1, version, "Normal"),
             logged(2, version, "Viral Pneumonia"),
             logged(3, version, reliable=False, minutes_ago=60), logged(4, other)])
    KeptImages(settings.effective_kept_images_dir).save(
        "pred0000", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 256)
    # One batch size to warm: the active version loads (and the app stops) sooner.
    with TestClient(create_app(settings.model_copy(update={"batch_max_size": 1}))) as client:
        yield Served(client, settings, log, version, other)


def _label(served: Served, prediction_id: str, label: str, key: str | None):  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": key} if key else {}
    return served.client.post(f"/predictions/{prediction_id}/label", json={"label": label},
                              headers=headers)


def _ids(answer) -> list[str]:  # type: ignore[no-untyped-def]
    assert answer.status_code == 200, answer.text
    return [p["prediction_id"] for p in answer.json()["predictions"]]


def test_a_labeler_or_an_admin_labels_an_answer_and_a_reader_may_not(served: Served) -> None:
    refused = _label(served, "pred0001", "Normal", READER_KEY)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert _label(served, "pred0001", "Normal", None).status_code == 401
    assert served.log.get("pred0001").confirmed is None  # nothing recorded

    by_labeler = _label(served, "pred0001", "Normal", LABELER_KEY)
    assert by_labeler.status_code == 200, by_labeler.text
    body = by_labeler.json()
    assert body["confirmed"]["label"] == "Normal"
    assert (body["confirmed"]["by"], body["confirmed"]["role"]) == ("labeler", "labeler")
    assert body["filed_into"] is None  # its image was not kept
    by_admin = _label(served, "pred0002", "COVID", ADMIN_KEY)
    assert by_admin.json()["confirmed"]["by"] == "admin"
    stored = served.log.get("pred0002")
    assert stored.confirmed is not None and stored.confirmed.label == "COVID"
    assert stored.right is False  # it answered Viral Pneumonia


def test_a_label_is_one_of_the_versions_classes_in_any_spelling(served: Served) -> None:
    spelled = _label(served, "pred0002", "VIRAL_PNEUMONIA", LABELER_KEY)
    assert spelled.json()["confirmed"]["label"] == "Viral Pneumonia"  # the version's spelling
    unknown = _label(served, "pred0002", "Tuberculosis", LABELER_KEY)
    assert unknown.status_code == 422
    error = unknown.json()["error"]
    assert error["code"] == "unknown_class" and all(c in error["message"] for c in CLASSES)
    stored = served.log.get("pred0002").confirmed
    assert stored is not None and stored.label == "Viral Pneumonia"  # left as it was
    missing = _label(served, "nope0000", "COVID", LABELER_KEY)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "prediction_not_found")
    assert served.client.get("/predictions/nope0000").status_code == 404


def test_a_kept_image_is_filed_under_its_label_and_a_relabel_moves_it(served: Served) -> None:
    labels = served.settings.data_dir / served.settings.labels_dataset
    first = _label(served, "pred0000", "COVID", LABELER_KEY)
    assert first.json()["filed_into"] == "site-labels"
    assert [p.relative_to(labels).as_posix() for p in labels.rglob("*.png")] == [
        "COVID/pred0000.png"]

    again = _label(served, "pred0000", "normal", ADMIN_KEY)
    assert again.json()["confirmed"] == {**again.json()["confirmed"], "label": "Normal",
                                         "by": "admin", "role": "admin"}
    assert [p.relative_to(labels).as_posix() for p in labels.rglob("*.png")] == [
        "Normal/pred0000.png"]
    listed = served.client.get("/datasets/site-labels").json()
    assert listed["classes"] == {"Normal": 1}
    stored = served.log.get("pred0000").confirmed
    assert stored is not None and stored.label == "Normal"  # replaced, not added


def test_answers_are_listed_newest_first_by_every_filter(served: Served) -> None:
    client = served.client
    assert _ids(client.get("/predictions")) == [f"pred{n:04d}" for n in (0, 1, 2, 4, 3)]
    assert _ids(client.get("/predictions", params={"version": served.other})) == ["pred0004"]
    assert _ids(client.get("/predictions", params={"reliable": "false"})) == ["pred0003"]
    since = (NOW - timedelta(minutes=30)).isoformat()
    assert "pred0003" not in _ids(client.get("/predictions", params={"since": since}))
    assert _ids(client.get("/predictions", params={"limit": 2})) == ["pred0000", "pred0001"]
    _label(served, "pred0001", "Normal", LABELER_KEY)
    assert _ids(client.get("/predictions", params={"labelled": "true"})) == ["pred0001"]
    assert "pred0001" not in _ids(client.get("/predictions", params={"labelled": "false"}))
    one = client.get("/predictions/pred0001").json()
    assert one["version"] == served.version and one["confirmed"]["label"] == "Normal"
    # a time without its zone, and a bare number (which pydantic would take for a Unix time)
    for bad in ({"limit": 0}, {"limit": 1001}, {"since": "2026-01-01T00:00:00"},
                {"since": "0.5"}):
        assert client.get("/predictions", params=bad).status_code == 422, bad


def test_the_models_views_carry_each_versions_live_figures(served: Served) -> None:
    for prediction_id, label in (("pred0000", "COVID"), ("pred0001", "COVID"),
                                 ("pred0004", "COVID")):
        assert _label(served, prediction_id, label, LABELER_KEY).status_code == 200
    listed = {v["version"]: v for v in served.client.get("/models").json()["versions"]}
    live = listed[served.version]["live"]
    assert (live["answers"], live["labelled"]) == (4, 2)
    assert (live["accuracy"]["hits"], live["accuracy"]["total"]) == (1, 2)  # pred0001 wrong
    assert live["per_class"]["COVID"]["total"] == 2
    assert listed[served.other]["live"]["accuracy"]["hits"] == 1
    detail = served.client.get(f"/models/{served.version}").json()
    assert detail["live"] == live and detail["shadow"] is False


def test_an_answer_can_be_labelled_as_soon_as_it_is_given(served: Served) -> None:
    wait_ready(served.client)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    answer = served.client.post("/predict", files={"file": ("x.png", buffer.getvalue())})
    assert answer.status_code == 200, answer.text
    prediction_id = answer.json()["prediction_id"]
    labelled = _label(served, prediction_id, "Normal", LABELER_KEY)  # before any wait
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["version"] == served.version
    assert labelled.json()["label"] == answer.json()["label"]


def test_the_models_list_stands_while_the_log_is_unreachable(
        served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = SqlitePredictionLog(tmp_path / "broken" / "predictions.sqlite", 1.0)
    shutil.rmtree(tmp_path / "broken")
    (tmp_path / "broken" / "predictions.sqlite").mkdir(parents=True)  # no database opens here
    served.client.app.state.prediction_log = broken  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING):
        listed = served.client.get("/models")
        detail = served.client.get(f"/models/{served.version}")
    assert listed.status_code == 200 and detail.status_code == 200
    assert [v["live"] for v in listed.json()["versions"]] == [None, None]
    assert detail.json()["live"] is None
    assert "the prediction log is unreachable" in caplog.text
