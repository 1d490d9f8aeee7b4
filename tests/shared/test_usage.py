"""What open jobs use, read from real job records in a SQLite job store."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import InUse
from shared.job_store import SqliteJobStore
from shared.registry.base import new_version_id
from shared.schemas import EvaluationParams, JobState
from shared.training_params import TrainingParams
from shared.usage import JobUsage, check_free, job_usage
from tests.helpers.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs.sqlite", heartbeat_timeout_s=60, clock=clock)


def test_open_jobs_use_their_datasets_and_versions(store: SqliteJobStore,
                                                   clock: ManualClock) -> None:
    parent, evaluated, compared, old = (new_version_id() for _ in range(4))
    store.create("fine-tune", TrainingParams(dataset="site", datasets=["more"],
                                             external_datasets=["elsewhere"],
                                             base_version=parent))
    clock.advance(1)
    store.create("evaluation", EvaluationParams(dataset="held-out", version=evaluated,
                                                compare=compared))
    store.start("evaluation")
    clock.advance(1)
    store.create("done", EvaluationParams(dataset="finished-set", version=old))
    store.start("done")
    store.finish("done", JobState.succeeded, model_version=old)
    clock.advance(1)
    store.create("cancelled", TrainingParams(dataset="abandoned"))
    store.cancel("cancelled")

    usage = job_usage(store)
    assert usage.versions == {parent: "fine-tune", evaluated: "evaluation",
                              compared: "evaluation"}
    assert usage.datasets == {"site": "fine-tune", "more": "fine-tune",
                              "elsewhere": "fine-tune", "held-out": "evaluation"}
    assert usage.states == {"fine-tune": JobState.queued, "evaluation": JobState.running}


def test_the_newest_job_is_named_and_active_is_no_version(store: SqliteJobStore,
                                                          clock: ManualClock) -> None:
    store.create("older", TrainingParams(dataset="site", base_version="active"))
    clock.advance(1)
    store.create("newer", TrainingParams(dataset="site"))
    usage = job_usage(store)
    assert usage.versions == {}
    assert usage.datasets == {"site": "newer"}
    assert job_usage(store, limit=1).states == {"newer": JobState.queued}


def test_a_used_name_is_refused_with_the_job_that_uses_it(store: SqliteJobStore) -> None:
    version = new_version_id()
    store.create("3f9c2a", EvaluationParams(dataset="held-out", version=version))
    store.start("3f9c2a")
    usage = job_usage(store)
    with pytest.raises(InUse, match=f"job 3f9c2a \\(running\\) uses version {version}"):
        usage.check_version(version)
    with pytest.raises(InUse, match="job 3f9c2a \\(running\\) uses dataset held-out"):
        usage.check_dataset("held-out")
    usage.check_version(new_version_id())  # free: nothing raised
    usage.check_dataset("other")
    with pytest.raises(InUse, match="^job 7 uses dataset x;"):
        check_free("dataset", "x", {"x": "7"})
    assert job_usage(SqliteJobStore(store.path.with_name("empty.sqlite"), 60)) == JobUsage()
