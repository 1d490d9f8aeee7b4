"""Dataset uploads: an image a job could not read is refused by its name, with its code's
status, and nothing of the upload is kept."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from tests.helpers.env import AS_ADMIN, sample_files
from tests.helpers.images import png_declaring
from tests.helpers.versions import zip_bytes


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=AS_ADMIN) as test_client:
        yield test_client


@pytest.mark.parametrize(("member", "data", "status", "code"), [
    ("COVID/bomb.png", png_declaring(20000, 10000, zlib.compress(bytes(10**5))), 413,
     "image_too_large"),
    ("COVID/huge.png", png_declaring(7746, 7746, zlib.compress(bytes(10**5))), 413,
     "image_too_large"),
    ("COVID/garbage.png", png_declaring(64, 64, b"garbage!" * 50), 422, "invalid_dataset"),
])
def test_an_image_no_job_could_read_is_refused_by_its_name(
        client: TestClient, settings: Settings, radiography_root: Path, member: str,
        data: bytes, status: int, code: str) -> None:
    films = {f"{label}/{p.name}": p.read_bytes()
             for label, files in sample_files(radiography_root, 2).items() for p in files}
    answer = client.post("/datasets", data={"name": "upload"},
                         files={"file": ("upload.zip", zip_bytes({**films, member: data}))})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and f"zip member {member!r}" in error["message"]
    assert client.get("/datasets").json()["datasets"] == []
    assert [p.name for p in settings.data_dir.iterdir()] == []  # nor anything half-unpacked
    kept = client.post("/datasets", data={"name": "upload"},
                       files={"file": ("upload.zip", zip_bytes(films))})
    assert kept.status_code == 201 and kept.json()["images"] == 6


def test_a_deleted_dataset_is_gone_whole_and_its_name_free_again(
        client: TestClient, settings: Settings, radiography_root: Path) -> None:
    films = zip_bytes({f"{label}/{p.name}": p.read_bytes()
                       for label, files in sample_files(radiography_root, 1).items()
                       for p in files})
    assert client.post("/datasets", data={"name": "upload"},
                       files={"file": ("upload.zip", films)}).status_code == 201
    deleted = client.delete("/datasets/upload")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": "dataset", "name": "upload"}
    assert client.get("/datasets").json()["datasets"] == []
    assert [p.name for p in settings.data_dir.iterdir()] == []  # no hidden remains either
    again = client.post("/datasets", data={"name": "upload"},
                        files={"file": ("upload.zip", films)})
    assert again.status_code == 201 and again.json()["images"] == 3


def test_only_a_dataset_can_be_deleted(client: TestClient, settings: Settings) -> None:
    kept = settings.effective_kept_images_dir  # a hidden folder beside the datasets
    kept.mkdir(parents=True)
    for name in (kept.name, "..", "nowhere"):
        refused = client.delete(f"/datasets/{name}")
        assert refused.status_code in (404, 405), (name, refused.text)
    assert kept.is_dir()
