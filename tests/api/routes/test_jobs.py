"""Queueing jobs: one whose datasets cannot match the classes it will be scored on is refused
before it is queued, by the rule and in the words the worker would have failed it with."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers.env import AS_ADMIN
from tests.helpers.versions import copy_tiny, publish_random

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


@pytest.fixture
def client(settings: Settings, radiography_root: Path) -> Iterator[TestClient]:
    """The app with three stored sets: ``tiny`` (the three classes), ``covid`` (another
    hospital's COVID films only) and ``tb`` (COVID and a class no version here has)."""
    tiny = copy_tiny(radiography_root, settings.data_dir / "tiny", per_class=2)
    for folder, label in (("covid", "COVID"), ("tb", "COVID"), ("tb", "Tuberculosis")):
        shutil.copytree(tiny / "Normal" / "images", settings.data_dir / folder / label)
    with TestClient(create_app(settings), headers=AS_ADMIN) as test_client:
        yield test_client


def _refused(response, names: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_dataset"
    assert all(name in error["message"] for name in names), error["message"]


def test_a_retrain_whose_sets_cannot_match_is_refused_before_it_is_queued(
        client: TestClient) -> None:
    _refused(client.post("/retrain", json={"dataset": "tiny", "external_datasets": ["tb"]}),
             ("dataset 'tb'", "'Tuberculosis'"))
    _refused(client.post("/retrain", json={"dataset": "tiny", "datasets": ["tb"]}),
             ("dataset 'tb'", "'Tuberculosis'"))
    assert client.get("/jobs").json()["jobs"] == []  # nothing queued
    # a set of fewer classes is scored on those it has
    accepted = client.post("/retrain", json={"dataset": "tiny", "base_weights": "none",
                                             "external_datasets": ["covid"]})
    assert accepted.status_code == 202, accepted.text


def test_an_evaluation_on_classes_the_version_lacks_is_refused_before_it_is_queued(
        client: TestClient, settings: Settings) -> None:
    version = publish_random(LocalRegistry(settings.models_dir), seed=4,
                             classes=tuple(CLASSES))
    _refused(client.post(f"/models/{version}/evaluate", json={"dataset": "tb"}),
             ("dataset 'tb'", "'Tuberculosis'"))
    assert client.get("/jobs").json()["jobs"] == []
    accepted = client.post(f"/models/{version}/evaluate", json={"dataset": "covid"})
    assert accepted.status_code == 202, accepted.text
