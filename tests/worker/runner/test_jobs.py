"""Running jobs: every outcome recorded, one liveness loop, a job never run twice, and what a
worker killed outright leaves behind cleaned once the job is over."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from shared.config import Settings
from shared.datasets import Dataset, discover
from shared.errors import InvalidDataset, JobCancelled
from shared.job_store import Clock, RedisJobStore, SqliteJobStore, utc_now
from shared.registry.local import LocalRegistry
from shared.schemas import EvaluationParams, JobState
from shared.training_params import TrainingParams
from tests.helpers.clock import ManualClock
from tests.helpers.reporters import CancelAfter
from tests.helpers.versions import TINY, Recorder, copy_tiny, publish_random
from worker.context import JobContext, Steps
from worker.runner.jobs import (
    StoreReporter,
    _work,
    claim,
    job_temp_dir,
    run_evaluation,
    run_job,
    sweep_checkpoints,
)
from worker.runner.retrain import train_and_publish

PARAMS = TrainingParams(dataset="tiny", epochs=3, image_size=32)
BEAT = 0.2  # s: the heartbeat interval of these tests (CXR_JOB_HEARTBEAT_INTERVAL_S)


def test_checkpoints_of_lost_and_unknown_jobs_are_swept_and_live_ones_kept(
        settings: Settings) -> None:
    clock = ManualClock()
    store = SqliteJobStore(settings.state_dir / "jobs.sqlite", heartbeat_timeout_s=0.5,
                           clock=clock)
    jobs = {name: uuid.uuid4().hex for name in ("lost", "alive", "queued", "unknown")}
    for name in ("lost", "alive", "queued"):
        store.create(jobs[name], PARAMS)
    assert store.start(jobs["lost"]) and store.start(jobs["alive"])
    root = settings.state_dir / "checkpoints"
    for job_id in jobs.values():
        (root / job_id).mkdir(parents=True)
        (root / job_id / "weights.weights.h5").write_bytes(b"weights")
    clock.advance(0.6)  # the lost job's worker stays silent past its heartbeat timeout
    store.heartbeat(jobs["alive"])
    removed = sweep_checkpoints(settings, store)
    assert sorted(removed) == sorted([jobs["lost"], jobs["unknown"]])
    assert sorted(p.name for p in root.iterdir()) == sorted([jobs["alive"], jobs["queued"]])
    assert store.get(jobs["lost"]).state == JobState.failed
    assert sweep_checkpoints(settings, store) == []  # nothing more to do


def _store(settings: Settings, clock: Clock = utc_now) -> SqliteJobStore:
    return SqliteJobStore(settings.state_dir / "jobs.sqlite", heartbeat_timeout_s=60,
                          clock=clock)


def _queued(store: SqliteJobStore) -> str:
    job_id = uuid.uuid4().hex
    store.create(job_id, PARAMS)
    return job_id


@pytest.mark.parametrize(("error", "state", "message"), [
    (JobCancelled("stop"), JobState.cancelled, "cancelled by request"),
    (InvalidDataset("no images"), JobState.failed, "invalid_dataset: no images"),
    (ZeroDivisionError("boom"), JobState.failed, "internal_error: ZeroDivisionError: boom"),
])
def test_every_way_a_job_ends_is_recorded(settings: Settings, error: Exception,
                                         state: JobState, message: str) -> None:
    store = _store(settings)
    job_id = _queued(store)
    assert store.start(job_id)

    def work(reporter: StoreReporter) -> str:
        raise error

    ended = _work(store, job_id, work, BEAT)
    assert (ended.state, ended.error) == (state, message)
    assert store.get(job_id).state == state and store.get(job_id).finished_at is not None


@pytest.mark.parametrize(("error", "traceback"), [
    (InvalidDataset("no images"), False),  # handled: its code says it all
    (ZeroDivisionError("boom"), True),     # unexpected: where it happened is needed
])
def test_only_an_unexpected_failure_logs_a_traceback(
        settings: Settings, caplog: pytest.LogCaptureFixture, error: Exception,
        traceback: bool) -> None:
    store = _store(settings)
    job_id = _queued(store)
    assert store.start(job_id)

    def work(reporter: StoreReporter) -> str:
        raise error

    with caplog.at_level(logging.INFO, logger="worker.runner.jobs"):
        _work(store, job_id, work, BEAT)
    assert any(record.exc_info for record in caplog.records) is traceback


def test_a_succeeded_job_records_its_version(settings: Settings) -> None:
    store = _store(settings)
    job_id = _queued(store)
    assert store.start(job_id)
    ended = _work(store, job_id, lambda reporter: "20260101-000000-abcdef", BEAT)
    assert ended.state == JobState.succeeded
    assert ended.model_version == "20260101-000000-abcdef" and ended.error is None


def test_the_heartbeat_keeps_the_job_alive_and_relays_a_cancel(settings: Settings) -> None:
    store = _store(settings)
    job_id = _queued(store)
    assert store.start(job_id)
    seen: list[bool] = []

    def work(reporter: StoreReporter) -> str:
        first_beat = store.record(job_id).heartbeat_at
        threading.Timer(0.2, store.cancel, [job_id]).start()
        deadline = time.monotonic() + 0.2 + 3 * BEAT
        while not reporter.cancel_requested() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(reporter.cancel_requested())
        seen.append(store.record(job_id).heartbeat_at != first_beat)
        raise JobCancelled("asked to stop")

    ended = _work(store, job_id, work, BEAT)
    assert seen == [True, True]  # relayed within a heartbeat, which also beat
    assert ended.state == JobState.cancelled


def test_claim_starts_a_queued_job_and_never_one_alive_elsewhere(settings: Settings) -> None:
    store = _store(settings)
    queued, running, finished = _queued(store), _queued(store), _queued(store)
    assert claim(store, queued, settings)
    assert store.get(queued).state == JobState.running
    assert store.start(finished)
    store.finish(finished, JobState.succeeded, model_version="20260101-000000-abcdef")
    assert not claim(store, finished, settings)
    # running elsewhere and beating: a redelivered task waits past the takeover time, then
    # leaves it alone
    assert store.start(running)
    quick = settings.model_copy(update={"job_takeover_after_s": 0.5,
                                      "job_heartbeat_interval_s": BEAT})
    beating = threading.Event()

    def beat() -> None:
        while not beating.wait(0.1):
            store.heartbeat(running)

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        started = time.monotonic()
        assert not claim(store, running, quick)
        assert time.monotonic() - started >= 0.5
    finally:
        beating.set()
        thread.join()
    assert store.record(running).attempts == 1


def test_claim_takes_over_a_job_whose_worker_went_silent(settings: Settings) -> None:
    clock = ManualClock()
    store = _store(settings, clock)
    job_id = _queued(store)
    assert store.start(job_id)
    clock.advance(0.6)  # its worker died: no heartbeat since
    assert claim(store, job_id, settings.model_copy(update={"job_takeover_after_s": 0.5}))
    assert store.record(job_id).attempts == 2


def test_a_job_on_a_missing_dataset_fails_and_leaves_no_checkpoint(settings: Settings) -> None:
    store = _store(settings)
    job_id = _queued(store)
    assert run_job(job_id, settings, store) == JobState.failed
    error = store.get(job_id).error
    assert error is not None and error.startswith("dataset_not_found")
    assert not (settings.state_dir / "checkpoints" / job_id).exists()
    # redelivered after it ended, it is not run again
    assert run_job(job_id, settings, store) == JobState.failed


def test_a_job_whose_parameters_this_version_cannot_read_fails_saying_so(
        settings: Settings) -> None:
    store = _store(settings)
    job_id = _queued(store)
    with sqlite3.connect(store.path) as conn:  # as another version of the service wrote it
        (document,) = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        stored = json.loads(document)
        stored["params"]["retired_option"] = 3
        conn.execute("UPDATE jobs SET doc = ? WHERE id = ?", (json.dumps(stored), job_id))
    assert run_job(job_id, settings, store) == JobState.failed
    error = store.get(job_id).error
    assert error is not None and error.startswith("job_params_unreadable")


def test_an_evaluation_job_stores_its_report(settings: Settings, tiny_dataset: Path) -> None:
    registry = LocalRegistry(settings.models_dir)
    version = publish_random(registry, seed=2, classes=("COVID", "Normal", "Viral Pneumonia"))
    shutil.copytree(tiny_dataset, settings.data_dir / "other")
    store = _store(settings)
    job_id = uuid.uuid4().hex
    store.create(job_id, EvaluationParams(dataset="other", version=version))
    assert run_evaluation(job_id, settings, store) == JobState.succeeded
    assert store.get(job_id).model_version == version
    [report] = registry.evaluations(version)
    assert report.dataset.name == "other" and report.metrics.images == 36


def test_a_running_evaluation_cancelled_twice_stops_and_stores_no_report(
        settings: Settings, radiography_root: Path, redis_url: str) -> None:
    registry = LocalRegistry(settings.models_dir)
    version = publish_random(registry, seed=2, classes=("COVID", "Normal", "Viral Pneumonia"))
    films = copy_tiny(radiography_root, settings.data_dir / "other", per_class=150)  # 450
    # Its last film cannot be read: an evaluation that ran to the end would fail on it.
    last = sorted((films / "Viral Pneumonia" / "images").iterdir())[-1]
    last.write_bytes(b"not an image")
    store = RedisJobStore(redis.Redis.from_url(redis_url), heartbeat_timeout_s=60)
    job_id = uuid.uuid4().hex
    store.create(job_id, EvaluationParams(dataset="other", version=version))
    answers: list[JobState] = []

    def cancel_when_running() -> None:  # DELETE /jobs/{id}, twice, as in the replay
        deadline = time.monotonic() + 60
        while store.get(job_id).state != JobState.running and time.monotonic() < deadline:
            time.sleep(0.01)
        answers.extend(store.cancel(job_id).state for _ in range(2))

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    try:
        state = run_evaluation(job_id, settings.model_copy(
            update={"job_heartbeat_interval_s": BEAT}), store)
    finally:
        canceller.join()
    assert answers == [JobState.running, JobState.running]
    assert state == JobState.cancelled
    assert store.get(job_id).error == "cancelled by request"
    assert registry.evaluations(version) == []


def test_the_check_before_storing_asks_the_store_not_the_last_heartbeat(
        settings: Settings) -> None:
    store = _store(settings)
    job_id = _queued(store)
    assert store.start(job_id)
    reporter = StoreReporter(store, job_id)
    reporter.stop_if_cancelled("storing the report")  # nobody asked: nothing happens
    store.cancel(job_id)
    assert not reporter.cancel_requested()  # no heartbeat has relayed it yet
    with pytest.raises(JobCancelled, match="cancelled before storing the report"):
        reporter.stop_if_cancelled("storing the report")
    assert reporter.cancel_requested()


def test_a_cancelled_job_stops_between_steps_never_after_the_last() -> None:
    reporter = CancelAfter(2)
    steps = Steps(reporter, "int8 copy", 3)
    steps.advance()
    with pytest.raises(JobCancelled, match="cancelled during int8 copy"):
        steps.advance()
    assert reporter.phases == [("int8 copy", 0, 3), ("int8 copy", 1, 3), ("int8 copy", 2, 3)]
    with pytest.raises(JobCancelled):  # asked before it began: it does not begin
        Steps(CancelAfter(0), "saving", 1)
    Steps(CancelAfter(1), "publishing", 1).advance()  # done: what it did stays done
    Steps(None, "evaluation", 2).advance(2)  # nobody to ask


class CancelDuring(Recorder):
    """Asks to stop once the named phase has begun."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.during = phase

    def cancel_requested(self) -> bool:
        return any(name == self.during for name, _, _ in self.phases)


@pytest.mark.trains
def test_a_retrain_cancelled_while_it_scores_its_test_split_publishes_nothing(
        tiny_dataset: Path, settings: Settings) -> None:
    # the external sets' chunks stop alike (tests/worker/evaluation/test_external.py)
    params = TrainingParams(dataset="tiny", external_datasets=["other"], **TINY)
    reporter = CancelDuring("evaluation")
    with pytest.raises(JobCancelled, match="cancelled during evaluation"):
        train_and_publish(discover(tiny_dataset), params, JobContext(settings, reporter),
                          external={"other": discover(tiny_dataset)})
    assert reporter.progress  # it trained
    name, done, total = reporter.phases[-1]
    assert name == "evaluation" and done < total  # and stopped part way through scoring
    assert LocalRegistry(settings.models_dir).versions() == []
    assert LocalRegistry(settings.models_dir).versions() == []


def test_a_retrain_whose_external_set_has_a_class_it_lacks_fails_before_training(
        tiny_dataset: Path, settings: Settings) -> None:
    params = TrainingParams(dataset="tiny", external_datasets=["tb"], **TINY)
    training = discover(tiny_dataset)
    tb = Dataset(root=tiny_dataset, layout="class-folders",
                 files={"Tuberculosis": training.files["COVID"][:2]})
    recorder = Recorder()
    with pytest.raises(InvalidDataset, match=r"^dataset 'tb': classes \['Tuberculosis'\]"):
        train_and_publish(training, params, JobContext(settings, recorder), external={"tb": tb})
    assert recorder.batches == [] and recorder.phases == []


def test_a_jobs_temporary_files_live_and_die_with_it(settings: Settings) -> None:
    import tensorflow as tf

    with job_temp_dir(settings, "job-1") as folder:
        @tf.function  # type: ignore[untyped-decorator]
        def relu(x: tf.Tensor) -> tf.Tensor:
            if tf.reduce_sum(x) > 0:  # autograph converts this into a module file
                return x
            return -x

        relu(tf.constant([1.0]))
        assert list(folder.glob("__autograph_generated_file*"))
    assert not folder.exists() and Path(tempfile.gettempdir()) != folder
    # what a killed process left is swept at the next worker start, once its job is over
    leftover = settings.state_dir / "tmp" / uuid.uuid4().hex
    leftover.mkdir(parents=True)
    sweep_checkpoints(settings, _store(settings))
    assert not leftover.exists()
