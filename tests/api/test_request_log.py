"""Request ids and access lines of the real app; the app serving from object storage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from shared.object_registry import ObjectStoreRegistry
from tests.api.conftest import publish_random, wait_ready
from tests.conftest import ADMIN_KEY, AS_ADMIN, S3Server, sample_files


def _access_lines(err: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "api.access"]


def test_request_ids_are_answered_and_logged(settings: Settings,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings.model_copy(update={"log_format": "json"})
    with TestClient(create_app(settings), headers=AS_ADMIN) as client:
        kept = client.get("/healthz", headers={"X-Request-ID": "pacs-42"})
        made = client.get("/healthz")
        refused = client.post("/predict?explain=true", files={"file": ("a.png", b"junk")},
                              headers={"X-Request-ID": "two words"})
        missing = client.get("/jobs/nope")
    assert kept.headers["X-Request-ID"] == "pacs-42"
    assert len(made.headers["X-Request-ID"]) == 32
    assert refused.headers["X-Request-ID"] not in ("two words", made.headers["X-Request-ID"])
    err = capsys.readouterr().err
    lines = {line["request_id"]: line for line in _access_lines(err)}
    assert lines["pacs-42"]["route"] == "/healthz" and lines["pacs-42"]["status"] == 200
    bad = lines[refused.headers["X-Request-ID"]]
    assert (bad["method"], bad["path"], bad["status"], bad["error_code"]) == (
        "POST", "/predict", 400, "invalid_image")
    assert "explain" not in json.dumps(bad)  # no query string
    gone = lines[missing.headers["X-Request-ID"]]
    assert (gone["route"], gone["error_code"]) == ("/jobs/{job_id}", "job_not_found")
    assert ADMIN_KEY not in err and "junk" not in err


def test_the_api_serves_versions_from_object_storage(
        s3_server: S3Server, tmp_path: Path, radiography_root: Path) -> None:
    uri = f"s3://{s3_server.new_bucket()}/models"
    publisher = ObjectStoreRegistry(uri, tmp_path / "worker-cache", s3_server.endpoint)
    first, second, third = (publish_random(publisher, seed) for seed in (1, 2, 3))
    publisher.activate(first)
    settings = Settings(data_dir=tmp_path / "data", state_dir=tmp_path / "state",
                        models_uri=uri, s3_endpoint_url=s3_server.endpoint,
                        reload_interval_s=0.2, inference_runtime="tensorflow")
    image = sample_files(radiography_root, 1)["COVID"][0].read_bytes()
    cache = settings.effective_model_cache_dir
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        answer = client.post("/predict", files={"file": ("x.png", image, "image/png")})
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == first
        listed = client.get("/models").json()
        assert listed["active"] == first
        assert {m["version"] for m in listed["versions"]} == {first, second, third}
        assert (cache / first / "model.keras").is_file()
        for version in (second, third):
            publisher.activate(version)
            wait_until_serving(client, image, version)
    # The served and the replaced version stay cached (a swap back is quick); older ones go.
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [second, third])


def wait_until_serving(client: TestClient, image: bytes, version: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = client.post("/predict", files={"file": ("x.png", image, "image/png")})
        if answer.headers.get("X-Model-Version") == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"not serving {version}")
