"""The Celery tasks: a job that ends failed in the store fails its task too, so that Celery's
events and Flower show a failure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import get_settings
from shared.job_store import open_job_store
from shared.schemas import JobState
from shared.training_params import TrainingParams


@pytest.fixture
def env_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process-wide settings (what a task reads) in a temp folder, embedded broker."""
    for name in ("DATA", "MODELS", "STATE"):
        monkeypatch.setenv(f"CXR_{name}_DIR", str(tmp_path / name.lower()))
    monkeypatch.delenv("CXR_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_job_that_fails_fails_its_task_and_is_not_run_again(env_settings: None) -> None:
    from worker.tasks import JobFailed, train

    store = open_job_store(get_settings())
    job_id = uuid.uuid4().hex
    store.create(job_id, TrainingParams(dataset="nowhere", epochs=1, image_size=32))
    result = train.apply(args=[job_id])  # the task itself, run here instead of by a worker
    assert result.state == "FAILURE" and isinstance(result.result, JobFailed)
    status = store.get(job_id)
    assert status.state == JobState.failed
    assert status.error is not None and status.error.startswith("dataset_not_found")
    again = train.apply(args=[job_id])  # redelivered: the job is over, its task fails again
    assert again.state == "FAILURE" and store.get(job_id).error == status.error
