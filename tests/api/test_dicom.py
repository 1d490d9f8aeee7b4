"""DICOM over HTTP: the same answer as the PNG of the same pixels, and no patient data in any
response, log line or stored file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers.dicom import (
    MARKER_ID,
    MARKER_NAME,
    as_12_bit,
    gray_of,
    make_dicom,
    malformed_dicoms,
)
from tests.helpers.env import AS_ADMIN, sample_files
from tests.helpers.versions import publish_random, wait_ready, zip_bytes

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
MARKERS = (MARKER_NAME.split("^")[0].encode(), MARKER_ID.encode())


def test_dicom_predictions_match_the_png_and_leak_no_patient_data(
        settings: Settings, radiography_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = LocalRegistry(settings.models_dir)
    registry.activate(publish_random(registry, seed=5))
    pngs = [p.read_bytes() for files in sample_files(radiography_root, 2).values()
            for p in files]
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with TestClient(create_app(settings), headers=AS_ADMIN) as client:
        wait_ready(client)
        for png in pngs:
            gray = gray_of(png)
            expected = client.post("/predict", files={"file": ("x.png", png)}).json()
            for dicom in (make_dicom(gray, 8),
                          make_dicom(4095 - as_12_bit(gray), 12, "MONOCHROME1",
                                     syntax=JPEG2000_LOSSLESS)):
                # no file name or media type to go by: recognised by content
                response = client.post("/predict", files={"file": ("upload", dicom)})
                assert response.status_code == 200, response.text
                texts.append(response.text)
                answer = response.json()
                assert answer["label"] == expected["label"]
                for label, p in expected["probabilities"].items():
                    assert answer["probabilities"][label] == pytest.approx(p, abs=1e-3)
        refused = client.post("/predict", files={"file": make_dicom(
            np.zeros((8, 8), np.uint8), 8, "RGB")})
        assert refused.status_code == 415 and refused.json()["error"]["code"] == "unsupported_dicom"
        texts.append(refused.text)

        # a dataset of DICOMs named after the patient keeps pixels only
        entries = {f"{label}/{MARKER_ID}_{i}.dcm": make_dicom(gray_of(p.read_bytes()), 8)
                   for label, files in sample_files(radiography_root, 2).items()
                   for i, p in enumerate(files)}
        created = client.post("/datasets", data={"name": "from-dicom"},
                              files={"file": ("d.zip", zip_bytes(entries))})
        assert created.status_code == 201, created.text
        assert created.json()["images"] == len(entries)
        texts += [created.text, client.get("/datasets/from-dicom").text]
    texts += [record.getMessage() for record in caplog.records]
    for marker in MARKERS:
        assert all(marker.decode() not in text for text in texts)
    stored = [path for folder in (settings.data_dir, settings.models_dir, settings.state_dir)
              for path in folder.rglob("*")]
    assert any(path.suffix == ".png" for path in stored)
    for path in stored:
        assert all(marker not in path.name.encode() for marker in MARKERS), path
        if path.is_file():
            content = path.read_bytes()
            assert all(marker not in content for marker in MARKERS), path
            assert b"DICM" not in content[:132]


def test_malformed_dicom_headers_get_a_400_from_predict_and_explain_and_a_422_as_data(
        settings: Settings) -> None:
    registry = LocalRegistry(settings.models_dir)
    registry.activate(publish_random(registry, seed=6))
    with TestClient(create_app(settings)) as client:  # no key: anyone may predict
        wait_ready(client)
        for name, dicom in malformed_dicoms().items():
            for query in ("", "?explain=true"):
                answer = client.post(f"/predict{query}", files={"file": ("x.dcm", dicom)})
                assert answer.status_code == 400, (name, query, answer.text)
                assert answer.json()["error"]["code"] == "invalid_image", name
            stored = client.post("/datasets", headers=AS_ADMIN, data={"name": "bad"},
                                 files={"file": ("d.zip", zip_bytes({
                                     "COVID/a.dcm": dicom, "Normal/b.dcm": dicom}))})
            assert stored.status_code == 422, (name, stored.text)
            assert stored.json()["error"]["code"] == "invalid_dataset", name
        assert client.get("/datasets", headers=AS_ADMIN).json()["datasets"] == []
