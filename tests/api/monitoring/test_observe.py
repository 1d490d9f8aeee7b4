"""Every answer of the real app, through POST /predict and the Open Inference Protocol's infer,
has a prediction id found in the log with what was answered, where the image came from, and
(with CXR_KEEP_IMAGES) its pixels; a shadow scores the answered images, and a broken one
changes no answer."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from api.monitoring import shadow
from api.monitoring.recorder import PredictionRecorder
from api.monitoring.shadow import ShadowScorer
from shared.config import Settings
from shared.monitoring.kept_images import KeptImages
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.records import PredictionQuery
from tests.helpers.env import API_KEYS, AS_ADMIN
from tests.helpers.versions import wait_ready

if TYPE_CHECKING:  # the fixture's type
    from tests.api.monitoring.conftest import Versions


@dataclass(frozen=True)
class App:
    client: TestClient
    settings: Settings

    @property
    def store(self) -> PredictionLog:
        return self.client.app.state.prediction_log  # type: ignore[attr-defined,no-any-return]

    @property
    def recorder(self) -> PredictionRecorder:
        return self.client.app.state.recorder  # type: ignore[attr-defined,no-any-return]

    @property
    def scorer(self) -> ShadowScorer:
        return self.client.app.state.shadow  # type: ignore[attr-defined,no-any-return]

    def predict(self, images: list[bytes], **headers: str) -> dict[str, Any]:
        response = self.client.post("/predict", headers=headers, files=[
            ("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)])
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def app(published: Versions, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("app")
    # Passes of one image: an answer's last bits depend on which images shared its pass, and
    # answers are compared byte for byte.
    settings = Settings(data_dir=root / "data", models_dir=published.registry.root,
                        state_dir=root / "state", broker_url=None, api_keys=API_KEYS,
                        export_onnx=False, keep_images=True, reload_interval_s=0.2,
                        batch_max_size=1)
    # The shadow at the others' priority: the suite shares the machine with other runs,
    # which at the lowest priority it would wait for (its own test checks the priority).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shadow, "lower_priority", lambda priority: None)
        with TestClient(create_app(settings), headers=AS_ADMIN) as client:
            wait_ready(client)
            yield App(client, settings)


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.05)


def _predictions(answer: dict[str, Any]) -> list[dict[str, Any]]:
    if "images" not in answer:
        return [answer]
    return [image["prediction"] for image in answer["images"]]


def test_every_answer_is_logged_under_its_id(app: App, xrays: list[bytes]) -> None:
    one = app.client.post("/predict", files={"file": ("x.png", xrays[0], "image/png")})
    several = app.predict(xrays)
    answers = [(one.json(), xrays[0], one.headers["X-Request-ID"])] + [
        (p, image, None) for p, image in zip(_predictions(several), xrays, strict=True)]
    assert app.recorder.flush()
    kept = KeptImages(app.settings.effective_kept_images_dir)
    for answer, image, request_id in answers:
        record = app.store.get(answer["prediction_id"])
        assert (record.version, record.label, record.probabilities, record.reliable,
                record.reasons) == (answer["model_version"], answer["label"],
                                    answer["probabilities"], answer["reliable"],
                                    answer["reasons"])
        assert record.image_sha256 == hashlib.sha256(image).hexdigest()
        assert record.source == "api" and record.image_kept
        assert request_id in (None, record.request_id)
        path = kept.path(record.prediction_id)
        assert path is not None
        with Image.open(path) as png:
            assert png.format == "PNG" and png.mode == "L"
    assert len({a["prediction_id"] for a, _, _ in answers}) == len(answers)


def test_the_source_header_is_recorded(app: App, xrays: list[bytes]) -> None:
    sent = {"page": "page", "cli": "cli", "CLI": "cli", "curl": "api"}
    ids = {value: app.predict(xrays[:1], **{"X-CXR-Source": value})["prediction_id"]
           for value in sent}
    assert app.recorder.flush()
    assert {value: app.store.get(ids[value]).source for value in sent} == sent


def test_the_open_inference_protocol_answers_carry_ids(app: App, xrays: list[bytes]) -> None:
    body = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [len(xrays)],
                        "data": [base64.b64encode(image).decode() for image in xrays]}],
            "outputs": [{"name": "LABEL"}]}
    answer = app.client.post("/v2/models/cxr/infer", json=body)
    assert answer.status_code == 200, answer.text
    ids = answer.json()["parameters"]["prediction_id"].split(",")
    labels = answer.json()["outputs"][0]["data"]
    assert len(ids) == len(xrays) == len(set(ids))
    assert app.recorder.flush()
    records = [app.store.get(i) for i in ids]
    assert [r.source for r in records] == ["v2"] * len(xrays)
    assert [r.label for r in records] == labels
    assert [r.image_sha256 for r in records] == [hashlib.sha256(i).hexdigest() for i in xrays]


def _follow(app: App, version: str | None) -> None:
    app.scorer.wake()
    _until(lambda: app.scorer.version == version and (
        version is None or app.scorer.current is not None or app.scorer.load_error is not None),
        f"following shadow {version}")


def test_a_shadow_scores_every_answered_image(app: App, versions: Versions,
                                              xrays: list[bytes]) -> None:
    versions.registry.set_shadow(versions.candidate)
    _follow(app, versions.candidate)
    assert app.scorer.current is not None
    ids = [p["prediction_id"] for p in _predictions(app.predict(xrays))]

    def scored() -> bool:
        app.recorder.flush()
        return app.store.shadow_counts(versions.candidate).seen >= len(xrays)

    _until(scored, "scored")
    counts = app.store.shadow_counts(versions.candidate)
    assert (counts.seen, counts.dropped, counts.failed) == (len(xrays), 0, 0)
    shadowed = app.store.query(PredictionQuery(shadow=versions.candidate, limit=None))
    assert sorted(r.prediction_id for r in shadowed) == sorted(ids)
    for record in shadowed:
        assert record.shadow is not None and record.version == versions.active
        assert set(record.shadow.probabilities) == set(record.probabilities)
    versions.registry.end_shadow()
    _follow(app, None)
    assert app.scorer.current is None


def _without_ids(answer: dict[str, Any]) -> dict[str, Any]:
    for prediction in _predictions(answer):
        assert prediction.pop("prediction_id")
    return answer


def test_a_broken_shadow_changes_no_answer(app: App, versions: Versions,
                                           xrays: list[bytes]) -> None:
    before = [_without_ids(app.predict(xrays)), _without_ids(app.predict(xrays[:1]))]
    versions.registry.set_shadow(versions.broken)
    _follow(app, versions.broken)
    assert app.scorer.current is None and "checksum" in (app.scorer.load_error or "")
    after = [_without_ids(app.predict(xrays)), _without_ids(app.predict(xrays[:1]))]
    assert after == before
    assert app.recorder.flush()
    counts = app.store.shadow_counts(versions.broken)
    assert counts.seen == 0 and (counts.last_error or "").startswith("not loaded")

