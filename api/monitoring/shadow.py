"""The shadow version: a published candidate that scores every answered image after its answer
was sent, so that it can be compared with the active version on the same live images.

Every API replica follows the registry's shadow pointer as it follows the active one
(``ModelServer``): one thread polls the pointer and loads the version (with ONNX Runtime where
it has an export), another scores the images offered. Both run at the lowest CPU priority
(Linux: per thread; ONNX Runtime's pool, made while loading, inherits it), so on a busy
machine the shadow gets what the answers leave: its bounded queue fills and drops images
(counted) instead of slowing answers. TensorFlow's pool is the process's, made by the answers,
so a version without an export shares their priority: prefer exported candidates.
A shadow that fails to load or to score changes no answer, and says why.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shared.allocator import release_freed_memory
from shared.config import Settings, ShadowPriority
from shared.errors import CxrError, RegistryUnavailable
from shared.loading import load_version
from shared.ml.screening import ImageLimits
from shared.ml.served import ServedVersion
from shared.monitoring.records import ShadowAnswer
from shared.registry import ActivePointer, Registry
from shared.registry.files import ONNX_FILE
from shared.schemas import Prediction

log = logging.getLogger(__name__)

# Images scored in one pass, when that many wait.
SHADOW_BATCH = 8
# The nice value of the shadow's threads: the lowest priority there is.
NICEST = 19
# SCHED_IDLE (Linux): a thread that runs only on a core nothing else wants. At nice 19 alone
# the shadow still took a few percent of a saturated machine from the answers.
IDLE_POLICY: int | None = getattr(os, "SCHED_IDLE", None)
# How long a stop waits for each thread. Not for a load or a batch in progress: at the lowest
# priority on a busy machine either may take minutes; what it makes after the stop is dropped.
STOP_WAIT_S = 1.0

Loader = Callable[[Registry, str], ServedVersion]


class ShadowObserver(Protocol):
    def shadow_scored(self, version: str) -> None: ...

    def shadow_dropped(self, version: str) -> None: ...

    def shadow_failed(self, version: str) -> None: ...


class ShadowCounter(Protocol):
    """Where the counters go (``PredictionRecorder``): summed across every replica."""

    def shadow_answered(self, prediction_id: str, answer: ShadowAnswer) -> None: ...

    def count_shadow(self, version: str, *, seen: int = 0, dropped: int = 0, failed: int = 0,
                     error: str | None = None) -> None: ...


@dataclass(frozen=True)
class _Offered:
    image: bytes
    prediction_id: str


def lower_priority(priority: ShadowPriority) -> None:
    """This thread, and the threads it starts from now on (ONNX Runtime's pool, created while
    loading), at the shadow's priority: "idle" (SCHED_IDLE and nice 19), "low" (nice 19) or
    "normal". Only on Linux, where a thread id names one thread; elsewhere it would name the
    process."""
    if priority == "normal" or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        if priority == "idle" and IDLE_POLICY is not None:
            os.sched_setscheduler(thread, IDLE_POLICY, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, thread, NICEST)
    except OSError as exc:
        log.warning("the shadow keeps its CPU priority: %s", exc)


def shadow_loader(settings: Settings) -> Loader:
    """Load a version as the app does, but with ONNX Runtime wherever it has an export: its
    threads, unlike TensorFlow's shared pool, are the shadow's own and inherit its priority."""
    def load(registry: Registry, version: str) -> ServedVersion:
        onnx = ONNX_FILE in registry.manifest(version).files
        return load_version(registry, version, runtime="onnx" if onnx else "tensorflow",
                            precision=settings.inference_precision,
                            threads=settings.inference_threads, timings={})
    return load


def shadow_limits(settings: Settings) -> ImageLimits:
    """The app's limits, with the gate warning instead of refusing: the shadow answers every
    image the active version answered."""
    return ImageLimits(settings.max_image_pixels, "off" if settings.xray_gate == "off" else "warn")


def shadow_answer(prediction: Prediction) -> ShadowAnswer:
    shift = prediction.distribution_shift
    return ShadowAnswer(version=prediction.model_version, label=prediction.label,
                        probabilities=prediction.probabilities, reliable=prediction.reliable,
                        shifted=shift.flagged if shift is not None else None)


class ShadowScorer:
    """``version``: the shadow the registry names; ``current``: the one loaded and scoring
    (None while loading, after a failed load, and without a shadow); ``load_error``: why the
    named one is not scoring."""

    def __init__(self, registry: Registry, counter: ShadowCounter, loader: Loader, *,
                 poll_interval_s: float, queue_size: int, limits: ImageLimits,
                 observer: ShadowObserver | None = None,
                 priority: ShadowPriority = "idle") -> None:
        self.registry = registry
        self.counter = counter
        self.loader = loader
        self.poll_interval_s = poll_interval_s
        self.limits = limits
        self.observer = observer
        self.priority = priority
        self.version: str | None = None
        self.current: ServedVersion | None = None
        self.load_error: str | None = None
        self._pointer: ActivePointer | None = None
        # None: the stop, which wakes the scorer at once.
        self._queue: queue.Queue[_Offered | None] = queue.Queue(queue_size)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._follow, name="shadow-loader",
                                          daemon=True),
                         threading.Thread(target=self._score_offered, name="shadow-scorer",
                                          daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Unload the shadow and end both threads; a thread still loading or scoring ends
        when that does (they are daemons), without being waited for."""
        self._stop.set()
        self._wake.set()
        with contextlib.suppress(queue.Full):  # a full queue wakes the scorer anyway
            self._queue.put_nowait(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=STOP_WAIT_S)
        self._unload()

    def wake(self) -> None:
        """Check the shadow pointer now instead of at the next poll."""
        self._wake.set()

    def offer(self, image: bytes, prediction_id: str, active_version: str) -> bool:
        """Queue an answered image for the shadow; never blocks. Nothing while no shadow is
        scoring or it is the version that answered; a full queue drops it (counted)."""
        current = self.current
        if current is None or current.version == active_version:
            return False
        try:
            self._queue.put_nowait(_Offered(image, prediction_id))
        except queue.Full:
            self.counter.count_shadow(current.version, dropped=1)
            if self.observer is not None:
                self.observer.shadow_dropped(current.version)
            return False
        return True

    def check(self) -> None:
        """Load the shadow the registry names if it changed since the last check; unload it
        when it ended."""
        pointer = self.registry.shadow()
        if pointer == self._pointer:
            return
        self._pointer = pointer
        if pointer is None:
            if self.version is not None:
                log.info("the shadow %s ended", self.version)
            self.version, self.load_error = None, None
            self._unload()
            return
        self.version = pointer.version
        if self.current is not None and self.current.version == pointer.version:
            self.load_error = None
            return
        self._unload()  # the previous shadow's memory back before the next one loads
        log.info("loading shadow version %s", pointer.version)
        try:
            loaded = self.loader(self.registry, pointer.version)
        except CxrError as exc:
            self.load_error = exc.message
            log.error("not scoring shadow %s: %s", pointer.version, exc.message)
            self.counter.count_shadow(pointer.version, error=f"not loaded: {exc.message}")
            return
        self.current, self.load_error = loaded, None
        if self._stop.is_set():  # stopped while loading, perhaps unloaded before this: drop it
            self._unload()
            return
        log.info("shadow version %s scores answered images (%s)", loaded.version,
                 loaded.runtime)

    def _follow(self) -> None:
        lower_priority(self.priority)
        while not self._stop.is_set():
            try:
                self.check()
            except RegistryUnavailable as exc:
                log.warning("cannot check the shadow: %s", exc.message)
            except Exception:  # the follower must outlive any one bad poll
                log.exception("checking the shadow failed")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def _unload(self) -> None:
        if self.current is None:
            return
        self.current = None
        while True:  # what was offered to it: nobody compares these any more
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        gc.collect()  # Keras models hold reference cycles
        release_freed_memory()

    def _score_offered(self) -> None:
        lower_priority(self.priority)
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first] if first is not None else []
            while batch and len(batch) < SHADOW_BATCH:
                try:
                    offered = self._queue.get_nowait()
                except queue.Empty:
                    break
                if offered is not None:
                    batch.append(offered)
            if not batch:
                continue
            model = self.current
            if model is not None:
                self._score(model, batch)
            del model, batch
            if self.current is None:  # ended while this pass held it: its memory back now
                gc.collect()
                release_freed_memory()

    def _score(self, model: ServedVersion, batch: list[_Offered]) -> None:
        version = model.version
        try:
            answers = model.answer_images([o.image for o in batch], self.limits)
        except Exception as exc:  # a shadow that crashes changes no answer: it is counted
            log.warning("shadow %s failed to score %d images: %s", version, len(batch), exc)
            self._failed(version, len(batch), f"{type(exc).__name__}: {exc}")
            return
        scored = 0
        for offered, answer in zip(batch, answers, strict=True):
            if isinstance(answer, CxrError):
                self._failed(version, 1, f"{answer.code}: {answer.message}")
                continue
            self.counter.shadow_answered(offered.prediction_id, shadow_answer(answer))
            scored += 1
            if self.observer is not None:
                self.observer.shadow_scored(version)
        if scored:
            self.counter.count_shadow(version, seen=scored)

    def _failed(self, version: str, count: int, error: str) -> None:
        self.counter.count_shadow(version, failed=count, error=error)
        if self.observer is not None:
            for _ in range(count):
                self.observer.shadow_failed(version)
