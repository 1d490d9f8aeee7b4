"""Running jobs: what a worker killed outright leaves behind is cleaned once the job is over."""

from __future__ import annotations

import time
import uuid

from shared.config import Settings
from shared.jobs import SqliteJobStore
from shared.schemas import JobState, TrainingParams
from worker.jobs import sweep_checkpoints

PARAMS = TrainingParams(dataset="tiny", epochs=3, image_size=32)


def test_checkpoints_of_lost_and_unknown_jobs_are_swept_and_live_ones_kept(
        settings: Settings) -> None:
    store = SqliteJobStore(settings.state_dir / "jobs.sqlite", heartbeat_timeout_s=0.5)
    jobs = {name: uuid.uuid4().hex for name in ("lost", "alive", "queued", "unknown")}
    for name in ("lost", "alive", "queued"):
        store.create(jobs[name], PARAMS)
    assert store.start(jobs["lost"]) and store.start(jobs["alive"])
    root = settings.state_dir / "checkpoints"
    for job_id in jobs.values():
        (root / job_id).mkdir(parents=True)
        (root / job_id / "weights.weights.h5").write_bytes(b"weights")
    time.sleep(0.6)  # the lost job's worker stays silent past its heartbeat timeout
    store.heartbeat(jobs["alive"])
    removed = sweep_checkpoints(settings, store)
    assert sorted(removed) == sorted([jobs["lost"], jobs["unknown"]])
    assert sorted(p.name for p in root.iterdir()) == sorted([jobs["alive"], jobs["queued"]])
    assert store.get(jobs["lost"]).state == JobState.failed
    assert sweep_checkpoints(settings, store) == []  # nothing more to do
