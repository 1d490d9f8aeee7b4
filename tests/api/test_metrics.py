"""GET /metrics: the Prometheus series move with real requests to the real app."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from api.metrics import ServiceMetrics
from shared.config import Settings
from shared.registry.local import LocalRegistry
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
