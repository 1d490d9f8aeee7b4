"""A corpus of damaged uploads sent to /predict: truncated, bit-flipped, renamed, empty, and
huge dimensions in a tiny file, as PNG, JPEG and DICOM. Each gets an answer or a coded 4xx;
none crashes the service, which still answers a good image afterwards."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers.dicom import gray_of, make_dicom
from tests.helpers.env import sample_files
from tests.helpers.versions import publish_random, wait_ready

CODES = {"invalid_image", "dicom_no_pixel_data", "unsupported_media_type", "unsupported_dicom",
         "unsupported_transfer_syntax", "image_too_large", "payload_too_large"}


def _png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header declares width x height."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def corpus(png: bytes) -> dict[str, bytes]:
    gray = gray_of(png)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    dicom = make_dicom(gray, 8)
    cases = {"empty": b"", "one byte": b"\x89", "png named as anything": png,
             "png header only": png[:33], "huge png": _png_claiming(60_000, 60_000),
             "huge dicom": make_dicom(np.zeros((8, 8), np.uint8), 8, Rows=60_000,
                                      Columns=60_000),
             "dicom marker only": b"\0" * 128 + b"DICM"}
    rng = np.random.default_rng(0)
    for name, data in (("png", png), ("jpeg", jpeg), ("dicom", dicom)):
        for fraction in (0.1, 0.5, 0.9, 0.99):
            cases[f"{name} truncated at {fraction:.0%}"] = data[: int(len(data) * fraction)]
        for i in range(8):
            flipped = bytearray(data)
            for position in rng.integers(0, len(data), size=1 + i):
                flipped[position] ^= 1 << int(rng.integers(0, 8))
            cases[f"{name} with {1 + i} bit(s) flipped, #{i}"] = bytes(flipped)
    return cases


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    registry = LocalRegistry(settings.models_dir)
    registry.activate(publish_random(registry, seed=7))
    with TestClient(create_app(settings)) as test_client:
        wait_ready(test_client)
        yield test_client


def test_damaged_uploads_get_an_answer_or_a_coded_4xx(client: TestClient,
                                                      radiography_root: Path) -> None:
    png = sample_files(radiography_root, 1)["Normal"][0].read_bytes()
    outcomes: dict[str, int] = {}
    for name, data in corpus(png).items():
        response = client.post("/predict", files={"file": ("upload.jpg", data)})
        outcomes[name] = response.status_code
        if response.status_code == 200:  # damage a decoder cannot see: still an image
            assert set(response.json()["probabilities"]) == {"a", "b", "c"}, name
            continue
        assert 400 <= response.status_code < 500, (name, response.text)
        assert response.json()["error"]["code"] in CODES, (name, response.text)
    assert outcomes["empty"] == 400 and outcomes["png header only"] == 400
    assert outcomes["huge png"] == 413 and outcomes["huge dicom"] == 413
    assert outcomes["png named as anything"] == 200  # told apart by content, not by name
    assert all(outcomes[f"{kind} truncated at 50%"] == 400 for kind in ("png", "jpeg", "dicom"))
    assert client.get("/healthz").status_code == 200
    assert client.post("/predict", files={"file": ("x.png", png)}).status_code == 200


def test_a_cameras_multi_picture_jpeg_is_read_as_its_first_picture(
        client: TestClient, radiography_root: Path) -> None:
    gray = Image.fromarray(gray_of(sample_files(radiography_root, 1)["COVID"][0].read_bytes()))
    mpo, jpeg = io.BytesIO(), io.BytesIO()
    gray.save(mpo, format="MPO", save_all=True, append_images=[Image.new("L", gray.size, 0)])
    gray.save(jpeg, format="JPEG")
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    answers = [client.post("/predict", files={"file": ("x.jpg", data)})
               for data in (mpo.getvalue(), jpeg.getvalue())]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    first, plain = (a.json()["probabilities"] for a in answers)
    assert first == pytest.approx(plain, abs=1e-4)  # the first picture, not the black one


def test_a_head_probe_of_healthz_is_answered(client: TestClient) -> None:
    probe = client.head("/healthz")
    assert probe.status_code == 200 and probe.content == b""
