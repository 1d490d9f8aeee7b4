"""Calls the tests make on a running service over HTTP."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.env import sample_files

# What /retrain gets in the end-to-end tests: seconds of training at 32 px.
TINY_RETRAIN = {"epochs": 2, "fine_tune_epochs": 1, "image_size": 32, "base_weights": "none",
        "batch_size": 8}


def dataset_zip(root: Path, per_class: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, files in sample_files(root, per_class).items():
            for path in files:
                archive.write(path, f"{label}/images/{path.name}")
    return buffer.getvalue()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def predict(client: httpx.Client, image: bytes) -> httpx.Response:
    return client.post("/predict", files={"file": ("cxr.png", image, "image/png")})


def served_version(client: httpx.Client, image: bytes, expected: str,
                   timeout: float = 60) -> dict[str, Any]:
    """Predict until the service answers from ``expected`` (hot reload, no restart)."""
    deadline = time.monotonic() + timeout
    while True:
        response = predict(client, image)
        if response.status_code == 200 and response.json()["model_version"] == expected:
            assert response.headers["X-Model-Version"] == expected
            return dict(response.json())
        assert response.status_code in (200, 503), response.text
        if time.monotonic() > deadline:
            raise AssertionError(f"still not serving {expected}: {response.text}")
        time.sleep(0.3)


def retrain(client: httpx.Client, **params: Any) -> dict[str, Any]:
    accepted = client.post("/retrain", json={"dataset": "tiny", **TINY_RETRAIN, **params})
    assert accepted.status_code == 202, accepted.text
    job = wait_job(client, accepted.json()["job_id"])
    assert job["state"] == "succeeded", job
    return job
