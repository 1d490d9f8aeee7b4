"""GET /metrics: the Prometheus series move with real requests to the real app."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from api.metrics import LIVE_FIGURES_SECONDS, ServiceMetrics
from shared.config import Settings
from shared.monitoring.prediction_log_redis import RedisPredictionLog
from shared.monitoring.prediction_log_sqlite import SqlitePredictionLog
from shared.monitoring.records import ConfirmedLabel, LoggedPrediction
from shared.registry.local import LocalRegistry
from tests.helpers.clock import ManualClock
from tests.helpers.env import API_KEYS, AS_ADMIN, sample_files
from tests.helpers.versions import publish_random, wait_ready, zip_bytes

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def test_metrics_move_with_requests(settings: Settings, radiography_root: Path) -> None:
    registry = LocalRegistry(settings.models_dir)
    version = publish_random(registry, seed=3)
    registry.activate(version)
    files = sample_files(radiography_root, 2)
    with TestClient(create_app(settings), headers=AS_ADMIN) as client:
        wait_ready(client)
        before = scrape(client)
        predictions = [client.post("/predict", files={"file": ("x.png", p.read_bytes())})
                       for paths in files.values() for p in paths[:1]]
        predictions.append(client.post("/predict?explain=true",
                                       files={"file": ("x.png", files["COVID"][0].read_bytes())}))
        assert all(r.status_code == 200 for r in predictions)
        assert client.post("/predict", files={"file": ("x.png", b"no image")}).status_code == 400
        assert client.get("/models").status_code == 200
        assert client.post("/models/nonsense/activate").status_code == 404
        assert client.get("/no/such/path").status_code == 404
        entries = {f"{label}/{p.name}": p.read_bytes() for label, ps in files.items() for p in ps}
        assert client.post("/datasets", data={"name": "m"},
                           files={"file": zip_bytes(entries)}).status_code == 201
        assert client.post("/retrain", json={"dataset": "m", "base_weights": "none"}
                           ).status_code == 202
        after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "cxr_http_requests_total"
    assert moved(requests, method="POST", route="/predict", status="200") == len(predictions)
    assert moved(requests, method="POST", route="/predict", status="400") == 1
    assert moved(requests, method="GET", route="/models", status="200") == 1
    assert moved(requests, method="POST", route="/models/{version}/activate", status="404") == 1
    assert moved(requests, method="GET", route="unmatched", status="404") == 1
    assert moved(requests, method="POST", route="/retrain", status="202") == 1
    assert not any(dict(labels).get("route") == "/metrics" for _, labels in after)
    assert moved("cxr_http_request_duration_seconds_count", method="POST", route="/predict") == (
        len(predictions) + 1)
    assert total(after, "cxr_predictions_total") - total(before, "cxr_predictions_total") == (
        len(predictions))
    assert {dict(labels)["label"] for n, labels in after if n == "cxr_predictions_total"} <= {
        "a", "b", "c"}
    assert moved("cxr_batch_size_count") >= 1
    assert moved("cxr_batch_queue_wait_seconds_count") == len(predictions) - 1  # not explain
    assert value(after, "cxr_model_load_seconds_count") >= 1
    served = [dict(labels) for n, labels in after if n == "cxr_model_info"]
    assert [info["version"] for info in served] == [version]
    assert value(after, "cxr_model_info", **served[0]) == 1
    assert value(before, "cxr_jobs", state="queued") == 0
    assert value(after, "cxr_jobs", state="queued") == 1  # no worker: it stays queued
    assert value(after, "cxr_jobs", state="running") == 0


def test_metrics_need_a_key_like_reads_and_survive_a_store_outage(tmp_path: Path) -> None:
    # Nothing listens on port 1: what the API sees while Redis is down.
    down = Settings(data_dir=tmp_path / "d", models_dir=tmp_path / "m", state_dir=tmp_path / "s",
                    broker_url="redis://127.0.0.1:1/0", require_key_for_reads=True,
                    api_keys=API_KEYS)
    with TestClient(create_app(down)) as client:
        assert client.get("/metrics").status_code == 401
        client.headers.update(AS_ADMIN)
        samples = scrape(client)
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    assert not any(name == "cxr_jobs" for name, _ in samples)


def test_model_info_names_only_the_served_version() -> None:
    metrics = ServiceMetrics(jobs=lambda: None)
    for version in ("v1", "v2"):  # a hot swap
        metrics.model_loaded(SimpleNamespace(version=version, runtime="onnx"), 1.5)  # type: ignore[arg-type]
    samples = parse(generate_latest(metrics.registry).decode())
    assert [dict(labels) for n, labels in samples if n == "cxr_model_info"] == [
        {"version": "v2", "runtime": "onnx"}]
    assert value(samples, "cxr_model_load_seconds_count") == 2


def logged_answer(n: int, version: str, label: str, reliable: bool,
                  at: datetime) -> LoggedPrediction:
    return LoggedPrediction(prediction_id=f"p{n}", time=at, version=version, label=label,
                            probabilities={label: 0.9}, reliable=reliable,
                            image_sha256="0" * 64, source="api")


def test_live_figures_are_read_from_the_prediction_log(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqlitePredictionLog(tmp_path / "predictions.sqlite", 30, clock=clock)
    # v1: 4 labelled (COVID right twice, wrong once; Normal right once), one unlabelled;
    # v2 answered but none of its answers was labelled.
    answers = [("COVID", True, "COVID"), ("COVID", True, "COVID"), ("Normal", False, "COVID"),
               ("Normal", True, "Normal"), ("COVID", True, None)]
    store.add([logged_answer(n, "v1", label, reliable, clock.now)
               for n, (label, reliable, _) in enumerate(answers)]
              + [logged_answer(9, "v2", "COVID", True, clock.now)])
    for n, (_, _, confirmed) in enumerate(answers):
        if confirmed is not None:
            store.confirm(f"p{n}", ConfirmedLabel(label=confirmed, by="reading-room",
                                                  role="labeler", at=clock.now))
    metrics = ServiceMetrics(jobs=lambda: None, prediction_log=lambda: store)
    assert metrics.live is not None
    metrics.live.clock = lambda: clock.now.timestamp()
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "cxr_live_labelled", version="v1") == 4
    assert value(samples, "cxr_live_accuracy", version="v1") == pytest.approx(3 / 4)
    assert value(samples, "cxr_live_class_recall", version="v1", **{"class": "COVID"}) == (
        pytest.approx(2 / 3))
    assert value(samples, "cxr_live_class_recall", version="v1", **{"class": "Normal"}) == 1
    assert value(samples, "cxr_live_reliable_right", version="v1") == 1  # 3 of 3 reliable
    assert not any(dict(labels).get("version") == "v2" for _, labels in samples)

    # A scrape soon after reuses the reading; one after LIVE_FIGURES_SECONDS reads again.
    store.confirm("p9", ConfirmedLabel(label="Normal", by="reading-room", role="labeler",
                                       at=clock.now))
    clock.advance(LIVE_FIGURES_SECONDS / 2)
    cached = parse(generate_latest(metrics.registry).decode())
    assert not any(dict(labels).get("version") == "v2" for _, labels in cached)
    clock.advance(LIVE_FIGURES_SECONDS)
    fresh = parse(generate_latest(metrics.registry).decode())
    assert fresh[("cxr_live_labelled", frozenset({"version": "v2"}.items()))] == 1
    assert fresh[("cxr_live_accuracy", frozenset({"version": "v2"}.items()))] == 0
    assert value(fresh, "cxr_live_labelled", version="v1") == 4


def test_live_figures_vanish_while_the_prediction_log_is_down() -> None:
    # Nothing listens on port 1: a Redis log that cannot be reached.
    down = RedisPredictionLog(redis.Redis(port=1, socket_connect_timeout=1), 30)
    metrics = ServiceMetrics(jobs=lambda: None, prediction_log=lambda: down)
    metrics.predicted("COVID")
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "cxr_predictions_total", label="COVID") == 1
    assert not any(name.startswith("cxr_live_") for name, _ in samples)
    before_start_up = ServiceMetrics(jobs=lambda: None, prediction_log=lambda: None)
    assert not any(name.startswith("cxr_live_") for name, _ in
                   parse(generate_latest(before_start_up.registry).decode()))


def test_shadow_and_prediction_log_counters_move_with_their_hooks() -> None:
    metrics = ServiceMetrics(jobs=lambda: None)
    for _ in range(3):
        metrics.shadow_scored("cand")
    metrics.shadow_dropped("cand")
    metrics.shadow_failed("other")
    metrics.prediction_logged(dropped=False)
    metrics.prediction_logged(dropped=False)
    metrics.prediction_logged(dropped=True)
    samples = parse(generate_latest(metrics.registry).decode())
    shadow = "cxr_shadow_images_total"
    assert value(samples, shadow, version="cand", outcome="scored") == 3
    assert value(samples, shadow, version="cand", outcome="dropped") == 1
    assert value(samples, shadow, version="other", outcome="failed") == 1
    assert total(samples, shadow) == 5
    assert value(samples, "cxr_prediction_log_records_total", outcome="written") == 2
    assert value(samples, "cxr_prediction_log_records_total", outcome="dropped") == 1
    assert metrics.live is None  # no prediction log given: no live series
