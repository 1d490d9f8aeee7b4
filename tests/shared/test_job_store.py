"""The job store on both backends (SQLite and Redis): transitions, cancellation and races.
Time moves on a hand-driven clock: liveness is tested without sleeping."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import redis

from shared.config import Settings
from shared.errors import JobNotCancellable, JobNotFound
from shared.job_store import JobStore, RedisJobStore, SqliteJobStore, open_job_store
from shared.schemas import EpochMetrics, EpochPoint, EvaluationParams, JobProgress, JobState
from shared.training_params import TrainingParams
from tests.helpers.clock import ManualClock

StoreFactory = Callable[[float], JobStore]
PARAMS = TrainingParams(dataset="tiny", epochs=3, fine_tune_epochs=2, image_size=32)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path,
               clock: ManualClock) -> StoreFactory:
    """Builds a store of the parametrized kind with a given heartbeat timeout; the stores of
    one test share its clock."""
    if request.param == "sqlite":
        return lambda timeout: SqliteJobStore(tmp_path / "state" / "jobs.sqlite", timeout,
                                              clock=clock)
    url = request.getfixturevalue("redis_url")
    return lambda timeout: RedisJobStore(redis.Redis.from_url(url), timeout, clock=clock)


@pytest.fixture
def store(make_store: StoreFactory) -> JobStore:
    return make_store(60.0)


def _new_id() -> str:
    return uuid.uuid4().hex


def _running(store: JobStore) -> str:
    job_id = _new_id()
    store.create(job_id, PARAMS)
    assert store.start(job_id) is True
    return job_id


def test_create_queues_a_job_with_the_total_epoch_count(store: JobStore) -> None:
    job_id = _new_id()
    status = store.create(job_id, PARAMS)
    assert status.state == JobState.queued
    assert status.progress == JobProgress(epoch=0, epochs=5)
    assert status.dataset == "tiny"
    assert status.started_at is None and status.finished_at is None
    assert store.get(job_id) == status
    record = store.record(job_id)
    assert record.params == PARAMS  # typed, not a dict
    assert record.params.model_dump() == PARAMS.model_dump()
    assert record.cancel_requested is False
    no_fine_tune = TrainingParams(dataset="x", epochs=7, fine_tune=False)
    assert store.create(_new_id(), no_fine_tune).progress.epochs == 7


def test_start_runs_a_queued_job_once(store: JobStore) -> None:
    job_id = _new_id()
    store.create(job_id, PARAMS)
    assert store.start(job_id) is True
    status = store.get(job_id)
    assert status.state == JobState.running
    assert status.started_at is not None and status.started_at >= status.created_at
    store.start(job_id)
    assert store.get(job_id).state == JobState.running
    assert store.get(job_id).started_at == status.started_at  # the first start is kept


def test_a_second_start_of_a_running_job_returns_false(store: JobStore) -> None:
    job_id = _new_id()
    store.create(job_id, PARAMS)
    assert store.start(job_id) is True
    assert store.start(job_id) is False  # a redelivered task must not run it twice


def test_report_progress_updates_a_running_job(store: JobStore, clock: ManualClock) -> None:
    job_id = _new_id()
    store.create(job_id, PARAMS)
    early = JobProgress(epoch=1, epochs=5, phase="head")
    assert store.report_progress(job_id, early) is False
    assert store.get(job_id).progress.epoch == 0  # a queued job has no progress yet
    store.start(job_id)
    beat = store.record(job_id).heartbeat_at
    progress = JobProgress(epoch=2, epochs=5, phase="head",
                           last=EpochMetrics(loss=0.5, accuracy=0.8, val_loss=0.6,
                                             val_accuracy=0.75))
    clock.advance(0.01)
    assert store.report_progress(job_id, progress) is False
    assert store.get(job_id).progress == progress.model_copy(update={"history": [
        EpochPoint(epoch=2, phase="head", loss=0.5, accuracy=0.8, val_loss=0.6,
                   val_accuracy=0.75)]})
    record = store.record(job_id)
    assert beat is not None and record.heartbeat_at is not None and record.heartbeat_at > beat


def test_progress_keeps_every_epoch_and_a_resumed_run_replaces_the_redone_ones(
        store: JobStore) -> None:
    job_id = _running(store)

    def report(epoch: int, loss: float, phase: str = "head") -> None:
        store.report_progress(job_id, JobProgress(epoch=epoch, epochs=5, phase=phase,
                                                  last=EpochMetrics(loss=loss)))

    for epoch, loss in ((1, 0.9), (2, 0.8), (3, 0.7)):
        report(epoch, loss)
    report(3, 0.65)  # the worker died after epoch 3's report; its checkpoint was epoch 2
    report(4, 0.6, "fine_tune")
    history = store.get(job_id).progress.history
    assert [(p.epoch, p.loss, p.phase) for p in history] == [
        (1, 0.9, "head"), (2, 0.8, "head"), (3, 0.65, "head"), (4, 0.6, "fine_tune")]


def test_finish_keeps_the_first_outcome(store: JobStore) -> None:
    job_id = _running(store)
    done = store.finish(job_id, JobState.succeeded, model_version="20250101-000000-abcdef")
    assert done.state == JobState.succeeded
    assert done.model_version == "20250101-000000-abcdef"
    assert done.finished_at is not None
    later = store.finish(job_id, JobState.failed, error="late failure")
    assert later.state == JobState.succeeded
    assert later.error is None
    assert later.model_version == "20250101-000000-abcdef"
    assert later.finished_at == done.finished_at
    assert store.get(job_id) == done
    assert store.start(job_id) is False


def test_a_failed_job_records_its_error(store: JobStore) -> None:
    job_id = _running(store)
    status = store.finish(job_id, JobState.failed, error="out of memory")
    assert status.state == JobState.failed
    assert status.error == "out of memory"
    assert store.get(job_id).error == "out of memory"


def test_cancelling_a_queued_job_is_immediate(store: JobStore) -> None:
    job_id = _new_id()
    store.create(job_id, PARAMS)
    status = store.cancel(job_id)
    assert status.state == JobState.cancelled
    assert status.finished_at is not None
    assert store.start(job_id) is False
    assert store.get(job_id).state == JobState.cancelled
    assert store.get(job_id).started_at is None


def test_cancelling_a_running_job_asks_the_worker_to_stop(store: JobStore) -> None:
    job_id = _running(store)
    assert store.heartbeat(job_id) is False
    status = store.cancel(job_id)
    assert status.state == JobState.running
    assert status.finished_at is None
    assert store.record(job_id).cancel_requested is True
    assert store.heartbeat(job_id) is True
    assert store.report_progress(job_id, JobProgress(epoch=1, epochs=5)) is True
    assert store.cancel(job_id).state == JobState.running  # asking twice is harmless
    assert store.finish(job_id, JobState.cancelled).state == JobState.cancelled
    assert store.get(job_id).state == JobState.cancelled


@pytest.mark.parametrize("outcome", [JobState.succeeded, JobState.failed, JobState.cancelled])
def test_a_finished_job_is_not_cancellable(store: JobStore, outcome: JobState) -> None:
    job_id = _running(store)
    store.finish(job_id, outcome)
    with pytest.raises(JobNotCancellable) as caught:
        store.cancel(job_id)
    assert caught.value.code == "job_not_cancellable"
    assert store.get(job_id).state == outcome
    assert store.record(job_id).cancel_requested is False


def test_cancelling_twice_a_queued_job_is_not_cancellable(store: JobStore) -> None:
    job_id = _new_id()
    store.create(job_id, PARAMS)
    store.cancel(job_id)
    with pytest.raises(JobNotCancellable):
        store.cancel(job_id)


def test_unknown_jobs_are_not_found(store: JobStore) -> None:
    missing = _new_id()
    calls: list[Callable[[], object]] = [
        lambda: store.get(missing), lambda: store.record(missing),
        lambda: store.start(missing), lambda: store.cancel(missing),
        lambda: store.heartbeat(missing),
        lambda: store.report_progress(missing, JobProgress(epochs=1)),
        lambda: store.finish(missing, JobState.failed),
    ]
    for call in calls:
        with pytest.raises(JobNotFound) as caught:
            call()
        assert caught.value.code == "job_not_found"
    assert store.recent() == []


def test_recent_lists_newest_first(store: JobStore, clock: ManualClock) -> None:
    ids = []
    for _ in range(4):
        ids.append(_new_id())
        store.create(ids[-1], PARAMS)
        clock.advance(0.002)
    assert [s.job_id for s in store.recent()] == ids[::-1]
    assert [s.job_id for s in store.recent(limit=2)] == ids[:1:-1]
    store.start(ids[0])
    assert store.recent()[-1].state == JobState.running


def test_a_job_with_a_silent_worker_is_declared_lost(make_store: StoreFactory,
                                                     clock: ManualClock) -> None:
    store = make_store(0.5)
    queued = _new_id()
    store.create(queued, PARAMS)
    job_id = _running(store)
    fresh = _running(store)
    for _ in range(4):  # 0.6 s of silence from job_id; fresh reports every 0.15 s
        clock.advance(0.15)
        store.heartbeat(fresh)
    status = store.get(job_id)
    assert status.state == JobState.failed
    assert status.error is not None and "worker lost" in status.error
    assert status.finished_at is not None
    assert store.get(fresh).state == JobState.running  # it reported in time
    assert store.get(queued).state == JobState.queued  # waiting in the queue is not lost
    # The failure is stored, not only shown: a late worker cannot resurrect the job.
    assert store.start(job_id) is False
    store.report_progress(job_id, JobProgress(epoch=3, epochs=5))
    assert store.finish(job_id, JobState.succeeded, model_version="x").state == JobState.failed
    again = make_store(60.0).get(job_id)
    assert again.state == JobState.failed and "worker lost" in (again.error or "")
    assert {s.job_id: s.state for s in store.recent()}[job_id] == JobState.failed


def test_heartbeats_keep_a_long_job_alive(make_store: StoreFactory,
                                          clock: ManualClock) -> None:
    store = make_store(0.6)
    job_id = _running(store)
    for _ in range(6):  # 0.9 s in all, longer than the timeout, but never silent for long
        clock.advance(0.15)
        assert store.heartbeat(job_id) is False
        assert store.get(job_id).state == JobState.running
    assert store.get(job_id).state == JobState.running


def test_start_and_cancel_racing_never_both_win(store: JobStore) -> None:
    outcomes = []
    for _ in range(40):
        job_id = _new_id()
        store.create(job_id, PARAMS)
        barrier = threading.Barrier(2)
        result: dict[str, object] = {}

        def do_start(job: str = job_id, gate: threading.Barrier = barrier,
                     out: dict[str, object] = result) -> None:
            gate.wait()
            out["started"] = store.start(job)

        def do_cancel(job: str = job_id, gate: threading.Barrier = barrier,
                      out: dict[str, object] = result) -> None:
            gate.wait()
            out["cancel_state"] = store.cancel(job).state

        threads = [threading.Thread(target=do_start), threading.Thread(target=do_cancel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert set(result) == {"started", "cancel_state"}
        record = store.record(job_id)
        assert record.cancel_requested is True
        if result["started"]:
            assert record.state == JobState.running
            assert result["cancel_state"] == JobState.running
            assert store.heartbeat(job_id) is True  # the worker will see the request
        else:
            assert record.state == JobState.cancelled
            assert result["cancel_state"] == JobState.cancelled
            assert record.started_at is None
        outcomes.append(bool(result["started"]))
    assert len(outcomes) == 40


def test_jobs_persist_across_store_instances(make_store: StoreFactory) -> None:
    first = make_store(60.0)
    job_id = _running(first)
    first.cancel(job_id)
    second = make_store(60.0)
    assert second.get(job_id).state == JobState.running
    assert second.heartbeat(job_id) is True


def test_open_job_store_uses_sqlite_beside_the_embedded_broker(settings: Settings) -> None:
    store = open_job_store(settings)
    assert isinstance(store, SqliteJobStore)
    assert store.path == settings.state_dir / "jobs.sqlite"
    assert store.heartbeat_timeout_s == settings.job_heartbeat_timeout_s
    job_id = _new_id()
    store.create(job_id, PARAMS)
    assert (settings.state_dir / "jobs.sqlite").is_file()
    assert open_job_store(settings).get(job_id).state == JobState.queued


def test_open_job_store_uses_redis_for_a_redis_broker(settings: Settings,
                                                      redis_url: str) -> None:
    redis_settings = settings.model_copy(update={"broker_url": redis_url,
                                                 "job_heartbeat_timeout_s": 120.0})
    assert redis_settings.uses_redis
    store = open_job_store(redis_settings)
    assert isinstance(store, RedisJobStore)
    assert store.heartbeat_timeout_s == 120.0
    job_id = _new_id()
    store.create(job_id, PARAMS)
    other = RedisJobStore(redis.Redis.from_url(redis_url), 60.0)
    assert other.get(job_id).state == JobState.queued
    assert not (settings.state_dir / "jobs.sqlite").exists()


def test_a_silent_running_job_is_taken_over_while_attempts_remain(
        store: JobStore, clock: ManualClock) -> None:
    job_id = _running(store)
    assert store.record(job_id).attempts == 1
    # alive: its heartbeat is fresh, so a second task must not run it too
    assert store.start(job_id, takeover_after_s=5, max_attempts=2) is False
    clock.advance(0.3)
    assert store.start(job_id, takeover_after_s=0.2, max_attempts=2) is True
    record = store.record(job_id)
    assert record.state == JobState.running and record.attempts == 2
    clock.advance(0.3)
    # the worker died again: no attempts left, the job ends failed with its reason
    assert store.start(job_id, takeover_after_s=0.2, max_attempts=2) is False
    status = store.get(job_id)
    assert status.state == JobState.failed and "worker lost 2 time(s)" in (status.error or "")


def test_a_finished_or_cancelled_job_is_never_taken_over(store: JobStore,
                                                         clock: ManualClock) -> None:
    done = _running(store)
    store.finish(done, JobState.succeeded, model_version="v")
    queued = _new_id()
    store.create(queued, PARAMS)
    store.cancel(queued)
    clock.advance(0.3)
    for job_id in (done, queued):
        assert store.start(job_id, takeover_after_s=0.1, max_attempts=5) is False


def test_silence_is_measured_on_the_store_clock_to_the_limit(store: JobStore,
                                                             clock: ManualClock) -> None:
    job_id = _running(store)
    clock.advance(5)
    assert store.start(job_id, takeover_after_s=5, max_attempts=2) is False  # not over 5 s
    clock.advance(0.001)
    assert store.start(job_id, takeover_after_s=5, max_attempts=2) is True
    assert store.record(job_id).heartbeat_at == clock()
    clock.advance(59.999)
    assert store.get(job_id).state == JobState.running  # the store's 60 s, not yet over
    clock.advance(0.002)
    assert store.get(job_id).state == JobState.failed


def test_an_evaluation_job_keeps_typed_parameters(store: JobStore) -> None:
    job_id = _new_id()
    params = EvaluationParams(dataset="other", version="20260101-000000-abcdef")
    status = store.create(job_id, params)
    assert (status.kind, status.model_version, status.progress.epochs) == (
        "evaluate", params.version, 1)
    assert store.record(job_id).params == params
    assert isinstance(store.record(_running(store)).params, TrainingParams)


def _write_document(store: JobStore, job_id: str, document: str) -> None:
    """Stores a record's JSON as is, beside the store's own writes."""
    if isinstance(store, SqliteJobStore):
        with closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute("INSERT INTO jobs VALUES (?, ?, ?)", (job_id, 0.0, document))
    else:
        assert isinstance(store, RedisJobStore)
        store.client.set(store.PREFIX + job_id, document)
        store.client.zadd(store.INDEX, {job_id: 0.0})


def test_records_with_parameters_as_plain_json_objects_read_typed(store: JobStore) -> None:
    # As the store wrote them before its parameters were typed: a dict dumped in the document.
    base = {"state": "queued", "progress": {"epoch": 0, "epochs": 5, "phase": None,
                                            "last": None, "history": []},
            "error": None, "created_at": "2026-12-06T07:09:30.445206Z", "started_at": None,
            "finished_at": None, "request_id": None, "heartbeat_at": None,
            "cancel_requested": False, "attempts": 0}
    evaluation = EvaluationParams(dataset="other", version="20260101-000000-abcdef")
    documents = {
        "train": {**base, "kind": "train", "dataset": "tiny", "model_version": None,
                  "params": PARAMS.model_dump(mode="json")},
        "evaluate": {**base, "kind": "evaluate", "dataset": "other",
                     "model_version": evaluation.version, "params": evaluation.model_dump()},
    }
    ids = {kind: _new_id() for kind in documents}
    for kind, document in documents.items():
        _write_document(store, ids[kind], json.dumps({"job_id": ids[kind], **document}))
    assert store.record(ids["train"]).params == PARAMS
    assert store.record(ids["evaluate"]).params == evaluation
    assert store.start(ids["train"]) is True  # and they are written back as they were read
    assert store.record(ids["train"]).params == PARAMS
    assert {s.job_id for s in store.recent()} == set(ids.values())


def test_a_record_whose_parameters_no_longer_read_still_lists(store: JobStore) -> None:
    # Written by another version of the service: a field this one does not know.
    job_id = _new_id()
    document = {"job_id": job_id, "kind": "train", "state": "queued", "dataset": "tiny",
                "progress": {"epoch": 0, "epochs": 5, "history": []},
                "created_at": "2026-12-06T07:09:30Z",
                "params": {**PARAMS.model_dump(mode="json"), "retired_option": 3}}
    _write_document(store, job_id, json.dumps(document))
    assert store.record(job_id).params is None
    assert store.get(job_id).state == JobState.queued
    assert job_id in {s.job_id for s in store.recent()}
