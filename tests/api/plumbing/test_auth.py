"""API keys: admin-only changes, optional keys for reads, keys never logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.plumbing.auth import match_key
from shared.config import Settings
from tests.helpers.env import ADMIN_KEY, API_KEYS, READER_KEY, sample_files
from tests.helpers.services import start_service

# Every endpoint that changes what the service holds or does.
MUTATING = [("post", "/retrain", {"json": {"dataset": "none"}}),
            ("delete", "/jobs/abc", {}),
            ("post", "/models/v1/activate", {}),
            ("post", "/models/v1/evaluate", {"json": {"dataset": "none"}}),
            ("post", "/datasets", {"data": {"name": "d"}, "files": {"file": b"PK"}})]


def _code(response) -> str:  # type: ignore[no-untyped-def]
    return str(response.json()["error"]["code"])


def test_changes_need_an_admin_key(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings)) as client:
        for method, path, kwargs in MUTATING:
            call = getattr(client, method)
            assert _code(call(path, **kwargs)) == "unauthorized", path
            assert _code(call(path, headers={"X-API-Key": "made-up"}, **kwargs)) == "unauthorized"
            denied = call(path, headers={"X-API-Key": READER_KEY}, **kwargs)
            assert (denied.status_code, _code(denied)) == (403, "forbidden"), path
            allowed = call(path, headers={"X-API-Key": ADMIN_KEY}, **kwargs)
            assert allowed.status_code not in (401, 403), (path, allowed.text)
        assert client.get("/models").status_code == 200  # reads are open by default
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert ADMIN_KEY not in logged and READER_KEY not in logged
    assert "no API keys configured" not in logged  # keys are configured: no warning


def test_with_no_keys_configured_changes_are_closed_and_the_401_says_why(
        tmp_path: Path) -> None:
    bare = Settings(data_dir=tmp_path / "d", models_dir=tmp_path / "m", state_dir=tmp_path / "s")
    with TestClient(create_app(bare)) as client:
        for headers in ({"X-API-Key": ADMIN_KEY}, {}):
            response = client.post("/retrain", json={"dataset": "x"}, headers=headers)
            assert (response.status_code, _code(response)) == (401, "unauthorized")
            # not "the API key is not known": the key may well be right
            message = response.json()["error"]["message"]
            assert "this service has no API keys configured (CXR_API_KEYS)" in message
            assert "`cxr key`" in message


def test_a_server_with_no_keys_warns_at_start(tmp_path: Path) -> None:
    """`cxr serve` itself, as a user starts it: the warning is in its log."""
    service = start_service(tmp_path, None, extra_env={"CXR_API_KEYS": "[]"},
                            processes=("serve",))
    try:
        with service.client() as client:  # with the suite's admin key, unknown here
            refused = client.post("/models/v1/activate")
    finally:
        service.stop()
    warnings = [line["message"] for line in service.log_lines() if line["level"] == "WARNING"]
    assert ("no API keys configured: every change route answers 401; make one with "
            "`cxr key` and set CXR_API_KEYS to what it prints") in warnings, service.logs()
    assert "no API keys configured" in refused.json()["error"]["message"]


def test_reads_and_predictions_can_require_a_key(settings: Settings,
                                                 radiography_root: Path) -> None:
    closed = settings.model_copy(update={"require_key_for_reads": True})
    image = sample_files(radiography_root, 1)["COVID"][0].read_bytes()
    with TestClient(create_app(closed)) as client:
        for path in ("/models", "/jobs", "/datasets"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"X-API-Key": READER_KEY}).status_code == 200
        assert _code(client.post("/predict", files={"file": image})) == "unauthorized"
        reader = client.post("/predict", files={"file": image},
                             headers={"X-API-Key": READER_KEY})
        assert _code(reader) == "no_model"  # past the key check
        assert client.get("/healthz").status_code == 200  # probes stay open
        assert client.get("/readyz").status_code == 503


def test_keys_are_matched_by_hash() -> None:
    assert match_key(ADMIN_KEY, API_KEYS) == API_KEYS[0]
    assert match_key(READER_KEY, API_KEYS) == API_KEYS[1]
    assert match_key(ADMIN_KEY.upper(), API_KEYS) is None
    assert all(ADMIN_KEY not in key.model_dump_json() for key in API_KEYS)
