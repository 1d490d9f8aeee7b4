"""Request ids and access lines of the real app."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from tests.helpers.env import ADMIN_KEY, AS_ADMIN


def _access_lines(err: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "api.access"]


def test_request_ids_are_answered_and_logged(settings: Settings,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings.model_copy(update={"log_format": "json"})
    with TestClient(create_app(settings), headers=AS_ADMIN) as client:
        kept = client.get("/models", headers={"X-Request-ID": "pacs-42"})
        made = client.get("/healthz")
        refused = client.post("/predict?explain=true", files={"file": ("a.png", b"junk")},
                              headers={"X-Request-ID": "two words"})
        missing = client.get("/jobs/nope")
    assert kept.headers["X-Request-ID"] == "pacs-42"
    assert len(made.headers["X-Request-ID"]) == 32
    assert refused.headers["X-Request-ID"] not in ("two words", made.headers["X-Request-ID"])
    err = capsys.readouterr().err
    lines = {line["request_id"]: line for line in _access_lines(err)}
    assert lines["pacs-42"]["route"] == "/models" and lines["pacs-42"]["status"] == 200
    assert made.headers["X-Request-ID"] not in lines  # probes: debug level only
    bad = lines[refused.headers["X-Request-ID"]]
    assert (bad["method"], bad["path"], bad["status"], bad["error_code"]) == (
        "POST", "/predict", 400, "invalid_image")
    assert "explain" not in json.dumps(bad)  # no query string
    gone = lines[missing.headers["X-Request-ID"]]
    assert (gone["route"], gone["error_code"]) == ("/jobs/{job_id}", "job_not_found")
    assert ADMIN_KEY not in err and "junk" not in err
