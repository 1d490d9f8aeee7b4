"""Answers that know their limits, over HTTP: the chest-radiograph gate refuses, warns or
stays out of the way as configured, and an answer carries `reliable` and its reasons."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from shared.config import Settings
from shared.ml.preprocessing import load_pixels
from shared.ml.reliability import ReliabilityRecord
from shared.registry.files import GATE_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.env import sample_files
from tests.helpers.versions import publish_random, wait_ready
from worker.evaluation.gate_fitting import fit_gate


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def gate_bytes(radiography_root: Path) -> bytes:
    films = [load_pixels(p.read_bytes(), 32)[..., 0]
             for paths in sample_files(radiography_root, 40).values() for p in paths]
    return fit_gate(films[::2], films[1::2], seed=0).to_bytes()


def _serve(settings: Settings, gate: bytes, record: ReliabilityRecord) -> TestClient:
    registry = LocalRegistry(settings.models_dir)
    version = publish_random(registry, seed=4, extra={"reliability": record.model_dump()},
                             files={GATE_FILE: gate})
    registry.activate(version)
    return TestClient(create_app(settings))


RECORD = ReliabilityRecord(confidence_threshold=0.99, confidence_coverage=0.95, chance=1 / 3,
                           balanced_accuracy_ci=[0.2, 0.5], better_than_chance=False)


@pytest.mark.parametrize("mode", ["refuse", "warn", "off"])
def test_the_gate_refuses_warns_or_keeps_out_as_configured(
        mode: str, settings: Settings, gate_bytes: bytes, radiography_root: Path) -> None:
    from skimage import data as samples

    film = sample_files(radiography_root, 41)["Normal"][-1].read_bytes()  # not fitted on
    photo = _png(samples.astronaut())
    configured = settings.model_copy(update={"xray_gate": mode})
    with _serve(configured, gate_bytes, RECORD) as client:
        wait_ready(client)
        answer = client.post("/predict", files={"file": ("f.png", film)}).json()
        assert answer["reliable"] is False
        # a random version near 1/3 per class: low confidence, and no better than chance
        assert "low_confidence" in answer["reasons"]
        assert "version_not_better_than_chance" in answer["reasons"]
        assert answer["confidence_threshold"] == 0.99
        assert "not_a_chest_xray" not in answer["reasons"]
        refused = client.post("/predict", files={"file": ("p.png", photo)})
        if mode == "refuse":
            assert answer["chest_xray"]["passed"] is True
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "not_a_chest_xray" and "colour" in error["message"]
            explained = client.post("/predict?explain=true", files={"file": ("p.png", photo)})
            assert explained.status_code == 422
        elif mode == "warn":
            body = refused.json()
            assert refused.status_code == 200 and body["reliable"] is False
            assert body["reasons"][0] == "not_a_chest_xray"
            assert body["chest_xray"]["passed"] is False
        else:
            assert refused.status_code == 200 and refused.json()["chest_xray"] is None
