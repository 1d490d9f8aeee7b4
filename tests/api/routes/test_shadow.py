"""The shadow over HTTP: an admin starts one (replacing any other) and ends it; the active
version cannot shadow itself; the report compares the two on the images both scored; and
activating the shadow ends it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.records import ConfirmedLabel, LoggedPrediction, ShadowAnswer
from shared.monitoring.stores import open_prediction_log
from shared.registry.local import LocalRegistry
from tests.helpers.env import AS_ADMIN, READER_KEY
from tests.helpers.versions import publish_random, republish

CLASSES = ("COVID", "Normal")
NOW = datetime.now(UTC)
UNKNOWN = "20200101-000000-abcdef"


@dataclass(frozen=True)
class Versions:
    client: TestClient
    registry: LocalRegistry
    log: PredictionLog
    active: str
    first: str
    second: str


@pytest.fixture
def versions(settings: Settings) -> Iterator[Versions]:
    registry = LocalRegistry(settings.models_dir)
    active = publish_random(registry, seed=1, classes=CLASSES, activate=True)
    first, second = (republish(registry, active, registry, {}, activate=False)
                     for _ in range(2))
    # One batch size to warm: each version loads (and the app stops) sooner.
    app = create_app(settings.model_copy(update={"batch_max_size": 1}))
    with TestClient(app, headers=AS_ADMIN) as client:
        yield Versions(client, registry, open_prediction_log(settings), active, first, second)


def shadowed(n: int, active: str, label: str, shadow: str, shadow_label: str,
             confirmed: str | None = None) -> LoggedPrediction:
    return LoggedPrediction(
        prediction_id=f"pred{n:04d}", time=NOW - timedelta(seconds=n), version=active,
        label=label, probabilities={label: 0.8}, reliable=True, image_sha256=f"{n:064x}",
        source="api", shadow=ShadowAnswer(version=shadow, label=shadow_label,
                                          probabilities={shadow_label: 0.7}, reliable=True),
        confirmed=None if confirmed is None else ConfirmedLabel(
            label=confirmed, by="labeler", role="labeler", at=NOW))


def test_an_admin_starts_replaces_and_ends_the_shadow(versions: Versions) -> None:
    client = versions.client
    started = client.post(f"/models/{versions.first}/shadow")
    assert started.status_code == 200, started.text
    report = started.json()
    assert (report["version"], report["current"], report["images"]) == (versions.first, True, 0)
    assert versions.registry.shadow().version == versions.first  # type: ignore[union-attr]
    listed = client.get("/models").json()
    assert listed["shadow"] == versions.first
    assert [v["version"] for v in listed["versions"] if v["shadow"]] == [versions.first]

    # one at a time: the second replaces the first, which then has nothing to report
    assert client.post(f"/models/{versions.second}/shadow").status_code == 200
    assert client.get(f"/models/{versions.second}/shadow").json()["current"] is True
    gone = client.get(f"/models/{versions.first}/shadow")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "shadow_not_found")
    not_it = client.delete(f"/models/{versions.first}/shadow")
    assert (not_it.status_code, not_it.json()["error"]["code"]) == (404, "shadow_not_found")

    ended = client.delete(f"/models/{versions.second}/shadow")
    assert ended.status_code == 200 and ended.json()["current"] is False
    assert versions.registry.shadow() is None
    assert client.get("/models").json()["shadow"] is None
    assert client.delete(f"/models/{versions.second}/shadow").status_code == 404


def test_the_active_version_or_an_unknown_one_cannot_be_the_shadow(versions: Versions) -> None:
    active = versions.client.post(f"/models/{versions.active}/shadow")
    assert (active.status_code, active.json()["error"]["code"]) == (409, "in_use")
    unknown = versions.client.post(f"/models/{UNKNOWN}/shadow")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")
    reader = versions.client.post(f"/models/{versions.first}/shadow",
                                  headers={"X-API-Key": READER_KEY})
    assert reader.status_code == 403
    # answers of other classes cannot be compared image by image with the active version's
    other = publish_random(versions.registry, seed=2, classes=("a", "b", "c"))
    mismatch = versions.client.post(f"/models/{other}/shadow")
    assert (mismatch.status_code, mismatch.json()["error"]["code"]) == (422, "class_mismatch")
    assert versions.registry.shadow() is None


def test_the_report_compares_both_on_the_images_both_scored(versions: Versions) -> None:
    first, active = versions.first, versions.active
    versions.client.post(f"/models/{first}/shadow")
    versions.log.add([
        shadowed(0, active, "COVID", first, "COVID", confirmed="COVID"),
        shadowed(1, active, "COVID", first, "Normal", confirmed="Normal"),
        shadowed(2, active, "Normal", first, "Normal"),
        shadowed(3, active, "Normal", versions.second, "COVID"),  # another shadow's
    ])
    versions.log.count_shadow(first, seen=3, dropped=2)
    report = versions.client.get(f"/models/{first}/shadow").json()
    assert (report["current"], report["images"], report["labelled"]) == (True, 3, 2)
    assert (report["seen"], report["dropped"]) == (3, 2)
    assert report["agreement"] == pytest.approx(2 / 3)
    assert report["matrix"] == {"COVID": {"COVID": 1, "Normal": 1},
                                "Normal": {"COVID": 0, "Normal": 1}}
    assert report["active"]["versions"] == [active]
    assert report["shadow"]["accuracy"]["hits"] == 2 and report["active"]["accuracy"]["hits"] == 1
    assert report["paired"] is not None
    # ended, it still reports what it scored within the log's retention
    final = versions.client.delete(f"/models/{first}/shadow").json()
    assert (final["current"], final["images"]) == (False, 3)
    assert versions.client.get(f"/models/{first}/shadow").json()["images"] == 3


def test_activating_the_shadow_ends_it(versions: Versions) -> None:
    versions.client.post(f"/models/{versions.first}/shadow")
    # force: these random versions have no test interval (tests/api/routes/test_models.py)
    activated = versions.client.post(f"/models/{versions.first}/activate",
                                     params={"force": "true"})
    assert activated.status_code == 200, activated.text
    assert (activated.json()["active"], activated.json()["shadow"]) == (versions.first, None)
    assert versions.registry.shadow() is None
