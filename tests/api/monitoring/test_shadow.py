"""The shadow scorer on its own: it follows the registry's shadow pointer, runs at the lowest
CPU priority, drops (and counts) what its queue cannot hold, and counts a version that fails
to load or to score instead of raising."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pytest

from api.metrics import ServiceMetrics
from api.monitoring import shadow
from api.monitoring.recorder import PredictionRecorder
from api.monitoring.shadow import ShadowScorer, shadow_limits, shadow_loader
from shared.config import Settings
from shared.loading import load_version
from shared.ml.served import ServedVersion
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.stores import open_prediction_log
from shared.registry import Registry

if TYPE_CHECKING:  # the fixture's type
    from tests.api.monitoring.conftest import Versions


@dataclasses.dataclass
class Shadowing:
    scorer: ShadowScorer
    recorder: PredictionRecorder
    store: PredictionLog
    metrics: ServiceMetrics

    def images(self, version: str, outcome: str) -> float:
        return self.metrics.registry.get_sample_value(
            "cxr_shadow_images_total", {"version": version, "outcome": outcome}) or 0.0


Make = Callable[..., Shadowing]


@pytest.fixture
def make(settings: Settings, versions: Versions) -> Iterator[Make]:
    """A scorer following ``versions``' registry (threads not started), with a started
    recorder over a real log."""
    made: list[Shadowing] = []

    def scorer(loader: Callable[[Registry, str], ServedVersion] | None = None,
               queue_size: int = 64) -> Shadowing:
        store = open_prediction_log(settings)
        recorder = PredictionRecorder(store, None, settings.max_image_pixels)
        recorder.start()
        metrics = ServiceMetrics(jobs=lambda: None)
        made.append(Shadowing(ShadowScorer(
            versions.registry, recorder, loader or shadow_loader(settings), poll_interval_s=0.1,
            queue_size=queue_size, limits=shadow_limits(settings), observer=metrics),
            recorder, store, metrics))
        return made[-1]

    yield scorer
    for each in made:
        each.scorer.stop()
        each.recorder.stop()


def _until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_its_threads_run_at_the_lowest_priority(make: Make) -> None:
    shadowing = make()
    shadowing.scorer.start()
    # this scorer's own: an earlier test's may still be finishing a load (its stop waits not)
    threads = shadowing.scorer._threads
    assert sorted(t.name for t in threads if t.is_alive()) == ["shadow-loader", "shadow-scorer"]

    def niced() -> bool:
        return all(t.native_id is not None and os.getpriority(os.PRIO_PROCESS, t.native_id)
                   == shadow.NICEST and os.sched_getscheduler(t.native_id) == os.SCHED_IDLE
                   for t in threads)

    _until(niced, "niced")
    # the answering threads keep theirs
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < shadow.NICEST
    assert os.sched_getscheduler(threading.get_native_id()) != os.SCHED_IDLE


def test_it_follows_the_pointer_and_scores_nothing_without_a_shadow(
        make: Make, versions: Versions, xrays: list[bytes]) -> None:
    shadowing = make()
    scorer = shadowing.scorer
    scorer.check()
    assert scorer.version is None and scorer.current is None
    assert not scorer.offer(xrays[0], "id-0", versions.active)
    versions.registry.set_shadow(versions.candidate)
    scorer.check()
    assert scorer.current is not None and scorer.version == versions.candidate
    # the version that answered is not compared with itself
    assert not scorer.offer(xrays[0], "id-1", versions.candidate)
    versions.registry.end_shadow()
    scorer.check()
    assert scorer.version is None and scorer.current is None
    assert shadowing.images(versions.candidate, "dropped") == 0


def test_a_full_queue_drops_and_counts(make: Make, versions: Versions,
                                       xrays: list[bytes]) -> None:
    shadowing = make(queue_size=1)
    versions.registry.set_shadow(versions.candidate)
    shadowing.scorer.check()  # loaded; its scoring thread not started, so nothing is taken
    offered = [shadowing.scorer.offer(xrays[0], f"id-{i}", versions.active) for i in range(5)]
    assert offered == [True, False, False, False, False]
    assert shadowing.recorder.flush()
    assert shadowing.store.shadow_counts(versions.candidate).dropped == 4
    assert shadowing.images(versions.candidate, "dropped") == 4


def test_a_version_that_fails_to_load_says_why(make: Make, versions: Versions,
                                               xrays: list[bytes]) -> None:
    shadowing = make()
    versions.registry.set_shadow(versions.broken)
    shadowing.scorer.check()
    scorer = shadowing.scorer
    assert scorer.version == versions.broken and scorer.current is None
    assert scorer.load_error is not None and "checksum" in scorer.load_error
    assert not scorer.offer(xrays[0], "id-0", versions.active)
    assert shadowing.recorder.flush()
    counts = shadowing.store.shadow_counts(versions.broken)
    assert counts.last_error is not None and counts.last_error.startswith("not loaded")


def _crash(batch: np.ndarray) -> np.ndarray:
    raise RuntimeError("the runtime crashed")


def test_a_version_that_crashes_while_scoring_is_counted(
        make: Make, versions: Versions, xrays: list[bytes], at_full_priority: None) -> None:
    def crashing(registry: Registry, version: str) -> ServedVersion:
        return dataclasses.replace(load_version(registry, version), forward=_crash)

    shadowing = make(crashing)
    versions.registry.set_shadow(versions.candidate)
    shadowing.scorer.start()
    _until(lambda: shadowing.scorer.current is not None, "loaded")
    for i, image in enumerate(xrays):
        assert shadowing.scorer.offer(image, f"id-{i}", versions.active)

    def counted() -> bool:
        shadowing.recorder.flush()
        return shadowing.store.shadow_counts(versions.candidate).failed == len(xrays)

    _until(counted, "counted")
    counts = shadowing.store.shadow_counts(versions.candidate)
    assert counts.seen == 0 and "the runtime crashed" in (counts.last_error or "")
    assert shadowing.images(versions.candidate, "failed") == len(xrays)


def test_a_stop_waits_for_no_load_and_drops_what_it_loaded(
        make: Make, versions: Versions, settings: Settings, at_full_priority: None) -> None:
    loading, finish, returned = threading.Event(), threading.Event(), threading.Event()

    def slow(registry: Registry, version: str) -> ServedVersion:
        # a load at the lowest priority on a busy machine: it ends when the test says
        loading.set()
        finish.wait(60)
        try:
            return shadow_loader(settings)(registry, version)
        finally:
            returned.set()

    shadowing = make(slow)
    versions.registry.set_shadow(versions.candidate)
    shadowing.scorer.start()
    assert loading.wait(30)
    started = time.monotonic()
    shadowing.scorer.stop()
    assert time.monotonic() - started < 10  # the stop of an app does not wait for it
    finish.set()
    assert returned.wait(60)
    _until(lambda: not any(t.is_alive() for t in shadowing.scorer._threads), "ended")
    assert shadowing.scorer.current is None  # loaded after the stop: dropped, not scoring
