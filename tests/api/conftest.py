"""Random-weight model versions published into a registry: timing and plumbing, not accuracy."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

from fastapi.testclient import TestClient

from shared.modeling import ModelConfig, build_model
from shared.registry import MODEL_FILE, Registry


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A zip archive of ``entries`` (member name -> content), in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def wait_ready(client: TestClient, timeout: float = 60) -> None:
    """Until the app has loaded its active version (its reloader runs in the background)."""
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)


def publish_random(registry: Registry, seed: int, size: int = 32,
                   extra: dict[str, Any] | None = None,
                   files: dict[str, bytes] | None = None) -> str:
    """A random-weight version; ``extra`` manifest entries and ``files`` beside the model."""
    import keras

    keras.utils.set_random_seed(seed)
    staging = registry.new_staging()
    build_model(ModelConfig(num_classes=3, image_size=size)).save(staging / MODEL_FILE)
    for name, data in (files or {}).items():
        (staging / name).write_bytes(data)
    manifest = {"created_at": "2026-01-01T00:00:00+00:00", "classes": ["a", "b", "c"],
                "image_size": size, "dataset": {"name": "t"}, "parent": None, **(extra or {})}
    return registry.publish(staging, manifest, activate=False)
