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
from shared.job_store import open_job_store
from shared.registry.local import LocalRegistry
from shared.schemas import EvaluationParams
from shared.training_params import TrainingParams
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


def test_a_fine_tune_is_queued_from_the_active_version_named_by_id(
        client: TestClient, settings: Settings) -> None:
    registry = LocalRegistry(settings.models_dir)
    version = publish_random(registry, seed=5, size=48, classes=tuple(CLASSES), activate=True)
    refused = client.post("/retrain", json={"dataset": "covid", "base_version": "active"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "class_mismatch"
    assert "one class teach the site's look" in refused.json()["error"]["message"]
    other = client.post("/retrain", json={"dataset": "tb", "base_version": "active"})
    assert other.json()["error"]["code"] == "class_mismatch"
    size = client.post("/retrain", json={"dataset": "tiny", "base_version": "active",
                                         "image_size": 64})
    assert size.status_code == 422 and size.json()["error"]["code"] == "conflicting_parameters"
    unknown = client.post("/retrain", json={"dataset": "tiny",
                                            "base_version": "20200101-000000-abcdef"})
    assert unknown.status_code == 404
    assert client.get("/jobs").json()["jobs"] == []

    accepted = client.post("/retrain", json={"dataset": "tiny", "base_version": "active"})
    assert accepted.status_code == 202, accepted.text
    params = open_job_store(settings).record(accepted.json()["job_id"]).params
    assert isinstance(params, TrainingParams)
    # the version active when it was asked, and what a fine-tune inherits and defaults to
    assert (params.base_version, params.image_size) == (version, 48)
    assert (params.epochs, params.learning_rate) == (20, 2e-5)


def test_an_evaluation_compares_with_another_version_of_the_same_classes(
        client: TestClient, settings: Settings) -> None:
    registry = LocalRegistry(settings.models_dir)
    first = publish_random(registry, seed=6, classes=tuple(CLASSES), activate=True)
    second = publish_random(registry, seed=7, classes=tuple(CLASSES))
    other = publish_random(registry, seed=8, classes=("COVID", "Normal"))
    url = f"/models/{second}/evaluate"
    assert client.post(url, json={"dataset": "covid", "compare": "nope"}).status_code == 404
    mismatch = client.post(url, json={"dataset": "covid", "compare": other})
    assert mismatch.json()["error"]["code"] == "class_mismatch"
    accepted = client.post(url, json={"dataset": "covid", "compare": "active"})
    assert accepted.status_code == 202, accepted.text
    params = open_job_store(settings).record(accepted.json()["job_id"]).params
    assert isinstance(params, EvaluationParams) and params.compare == first
