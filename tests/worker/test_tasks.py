"""The Celery tasks: a job that ends failed in the store fails its task too, so that Celery's
events and Flower show a failure; a failure the code handles is one log line, no traceback."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings, get_settings
from shared.job_store import open_job_store
from shared.schemas import JobState
from shared.task_queue import TRAIN_TASK, TRAINING_QUEUE, make_celery
from shared.training_params import TrainingParams
from tests.helpers.services import start_service, wait_for_log


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


def test_a_handled_failure_is_logged_in_one_line_without_a_traceback(
        tmp_path: Path, redis_url: str) -> None:
    """`cxr worker` as `make run` starts it (text logs), on Redis: a job on a dataset that is
    not there fails with its code, and the worker's output holds no traceback."""
    service = start_service(tmp_path, redis_url, extra_env={"CXR_LOG_FORMAT": "text"},
                            processes=("worker",))
    try:
        settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models",
                            state_dir=tmp_path / "state", broker_url=redis_url)
        store, job_id = open_job_store(settings), uuid.uuid4().hex
        store.create(job_id, TrainingParams(dataset="nowhere", epochs=1, image_size=32))
        make_celery(settings).send_task(TRAIN_TASK, args=[job_id], task_id=job_id,
                                        queue=TRAINING_QUEUE)
        wait_for_log(service, "worker", f"Task {TRAIN_TASK}[{job_id}]")  # Celery's own line
        time.sleep(0.5)  # anything it would print after that line
    finally:
        service.stop()
    status = store.get(job_id)
    assert status.state == JobState.failed
    assert status.error is not None and status.error.startswith("dataset_not_found")
    output = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in output, output
    assert f"job failed: {status.error}" in output, output  # why, in the line that says so
