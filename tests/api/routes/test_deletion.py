"""Deleting versions and datasets: refused (409 in_use) for the active version, the shadow,
and whatever a queued or running job uses; otherwise gone from every listing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from shared.config import Settings
from shared.job_store import JobStore, open_job_store
from shared.registry.local import LocalRegistry
from shared.schemas import EvaluationParams
from shared.training_params import TrainingParams
from tests.helpers.env import AS_ADMIN
from tests.helpers.versions import publish_random, republish

CLASSES = ("COVID", "Normal")


@dataclass(frozen=True)
class Store:
    client: TestClient
    registry: LocalRegistry
    jobs: JobStore
    data_dir: Path
    versions: dict[str, str]  # role -> version


def _dataset(folder: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buffer, format="PNG")
    for label in CLASSES:
        (folder / label).mkdir(parents=True)
        (folder / label / "0.png").write_bytes(buffer.getvalue())


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """Versions: the active one, the shadow, a fine-tune's parent and an evaluation's two
    (of queued jobs), and a free one. Datasets: the fine-tune's, the evaluation's, a free
    one."""
    registry = LocalRegistry(settings.models_dir)
    roles = ("active", "shadow", "parent", "evaluated", "compared", "free")
    first = publish_random(registry, seed=1, classes=CLASSES)
    versions = {role: republish(registry, first, registry, {}, activate=False)
                for role in roles}
    registry.activate(versions["active"])
    registry.set_shadow(versions["shadow"])
    for name in ("site", "other-hospital", "free"):
        _dataset(settings.data_dir / name)
    jobs = open_job_store(settings)
    jobs.create("finetune1", TrainingParams(dataset="site", base_version=versions["parent"]))
    jobs.create("evaluation1", EvaluationParams(dataset="other-hospital",
                                                version=versions["evaluated"],
                                                compare=versions["compared"]))
    # One batch size to warm: the active version loads (and the app stops) sooner.
    app = create_app(settings.model_copy(update={"batch_max_size": 1}))
    with TestClient(app, headers=AS_ADMIN) as client:
        yield Store(client, registry, jobs, settings.data_dir, versions)


def _refused(response, status: int, code: str, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and all(w in error["message"] for w in words), error


def _listed_versions(client: TestClient) -> list[str]:
    return [v["version"] for v in client.get("/models").json()["versions"]]


def _listed_datasets(client: TestClient) -> list[str]:
    return [d["name"] for d in client.get("/datasets").json()["datasets"]]


def test_versions_in_use_cannot_be_deleted(store: Store) -> None:
    versions, client = store.versions, store.client
    _refused(client.delete(f"/models/{versions['active']}"), 409, "in_use", "active")
    _refused(client.delete(f"/models/{versions['shadow']}"), 409, "in_use", "shadow")
    _refused(client.delete(f"/models/{versions['parent']}"), 409, "in_use", "finetune1")
    for role in ("evaluated", "compared"):
        _refused(client.delete(f"/models/{versions[role]}"), 409, "in_use", "evaluation1")
    _refused(client.delete("/models/20200101-000000-abcdef"), 404, "model_not_found")
    assert set(versions.values()) <= set(_listed_versions(client))

    # a job that ended uses nothing
    store.jobs.cancel("finetune1")
    deleted = client.delete(f"/models/{versions['parent']}")
    assert deleted.json() == {"deleted": "version", "name": versions["parent"]}


def test_a_free_version_is_deleted_from_every_listing(store: Store) -> None:
    free = store.versions["free"]
    deleted = store.client.delete(f"/models/{free}")
    assert deleted.status_code == 200, deleted.text
    assert free not in _listed_versions(store.client)
    _refused(store.client.get(f"/models/{free}"), 404, "model_not_found")
    assert not (store.registry.root / free).exists()
    _refused(store.client.delete(f"/models/{free}"), 404, "model_not_found")


def test_datasets_in_use_cannot_be_deleted_and_others_go_whole(store: Store) -> None:
    client = store.client
    _refused(client.delete("/datasets/site"), 409, "in_use", "finetune1", "queued")
    _refused(client.delete("/datasets/other-hospital"), 409, "in_use", "evaluation1")
    _refused(client.delete("/datasets/nowhere"), 404, "dataset_not_found")
    assert sorted(_listed_datasets(client)) == ["free", "other-hospital", "site"]

    deleted = client.delete("/datasets/free")
    assert deleted.json() == {"deleted": "dataset", "name": "free"}
    assert sorted(_listed_datasets(client)) == ["other-hospital", "site"]
    assert [p.name for p in store.data_dir.iterdir() if "free" in p.name] == []  # nor hidden
    _refused(client.get("/datasets/free"), 404, "dataset_not_found")
