"""Versions loaded on demand: requests waiting for a load wait on the event loop, and beyond
the cache's bound get 503 busy at once, while the rest of the API answers."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi.testclient import TestClient
from PIL import Image

from api.inference.versions_cache import VersionCache
from api.main import create_app
from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers.versions import publish_random, wait_ready


def _infer_body() -> dict[str, object]:
    buffer = io.BytesIO()
    Image.new("L", (48, 48), 90).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    return {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [image]}]}


def test_requests_for_versions_being_loaded_wait_in_bounded_numbers(
        settings: Settings) -> None:
    registry = LocalRegistry(settings.models_dir)
    versions = [publish_random(registry, seed=seed) for seed in range(4)]
    registry.activate(versions[0])
    named = versions[1:] * 4  # three versions not in memory, in turn
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(len(named)) as pool:
        wait_ready(client)
        cache: VersionCache = client.app.state.version_cache  # type: ignore[attr-defined]
        cache.max_waiting = 4
        answers = list(pool.map(lambda v: client.post(
            f"/v2/models/cxr/versions/{v}/infer", json=_infer_body()), named))
        health = client.get("/healthz")
    by_status: dict[int, list[httpx.Response]] = {}
    for answer in answers:
        by_status.setdefault(answer.status_code, []).append(answer)
    assert set(by_status) == {200, 503}, {s: a[0].text for s, a in by_status.items()}
    assert all(a.json()["code"] == "busy" and a.headers["Retry-After"]
               for a in by_status[503])
    assert all(a.headers["X-Model-Version"] in versions[1:] for a in by_status[200])
    assert health.status_code == 200
