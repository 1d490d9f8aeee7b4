"""Dynamic batching: requests that arrive within a few milliseconds share one forward pass.

Handlers announce themselves (``arriving``), decode and preprocess on the decode budget's
threads, then hand their pixels to the batcher and await a future. One thread runs the
passes, one at a time, so concurrent requests never oversubscribe the cores: while it runs a
batch the next one gathers. A batch is sent as soon as one of these holds:

- it has the version's own batch size (``ServedVersion.batch_size``, the one measured fastest
  per image in its runtime) or ``max_size``, whichever is smaller;
- no other request is on its way (announced, still decoding): waiting would gain nothing,
  so a lone request is never delayed;
- its oldest request has waited ``max_delay_s``.

Each request keeps the model version it took when it arrived; requests of different versions
(a hot swap mid-burst) are never mixed in one batch, and the old version serves its last
requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shared.ml.served import ServedVersion, stacked_inputs
from shared.schemas import Prediction

log = logging.getLogger(__name__)


@dataclass
class _Request:
    model: ServedVersion
    pixels: np.ndarray
    inputs: np.ndarray | None  # the gate's features of the pixels, where screening made them
    arrived: float = field(default_factory=time.monotonic)
    future: Future[Prediction] = field(default_factory=Future)


class BatchObserver(Protocol):
    def batch_started(self, size: int, waits: Sequence[float]) -> None:
        """A forward pass of ``size`` images starts; each waited so long since submission."""


class Batcher:
    def __init__(self, max_size: int, max_delay_s: float,
                 observer: BatchObserver | None = None) -> None:
        if max_size < 1 or max_delay_s < 0:
            raise ValueError("max_size must be at least 1 and max_delay_s not negative")
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self.observer = observer
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batch sizes, read by tests
        self._queue: deque[_Request] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._arriving = 0  # requests announced and not yet submitted or given up
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        self._thread.join(timeout=60)

    def limit(self, model: ServedVersion) -> int:
        """The most requests of ``model`` that one batch gathers."""
        return min(self.max_size, model.batch_size)

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Announce a request that is being prepared; submit it inside the block. A batch
        waits (up to the delay) only while some request is announced."""
        with self._ready:
            self._arriving += 1
        try:
            yield
        finally:
            with self._ready:
                self._arriving -= 1
                self._ready.notify()

    def submit(self, model: ServedVersion, pixels: np.ndarray,
               inputs: np.ndarray | None = None) -> Future[Prediction]:
        """Queue one image's prepared pixels (size, size, 3) for ``model``, with their gate
        features where known."""
        request = _Request(model, pixels, inputs)
        with self._ready:
            if self._stopping:
                raise RuntimeError("the batcher is stopping")
            self._queue.append(request)
            self._ready.notify()
        return request.future

    def _next_batch(self) -> list[_Request] | None:
        """The oldest request and later ones of its version, until the batch is full, nothing
        more is on its way, or the oldest one's deadline."""
        with self._ready:
            while not self._queue:
                if self._stopping:
                    return None
                self._ready.wait()
            first = self._queue.popleft()
            batch = [first]
            limit = self.limit(first.model)
            deadline = first.arrived + self.max_delay_s
            while len(batch) < limit:
                batch.extend(self._take(first.model, limit - len(batch)))
                remaining = deadline - time.monotonic()
                if (len(batch) >= limit or remaining <= 0 or self._stopping
                        or self._arriving == 0):
                    break
                self._ready.wait(remaining)
            return batch

    def _take(self, model: ServedVersion, limit: int) -> list[_Request]:
        taken = [r for r in self._queue if r.model is model][:limit]
        for request in taken:
            self._queue.remove(request)
        return taken

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._pass(batch)
            # Idle, this thread must not hold the last batch's version: a replaced one is
            # only released (ModelServer.release_retired) once nothing refers to it.
            del batch

    def _pass(self, batch: list[_Request]) -> None:
        self.batch_sizes.append(len(batch))
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        self._observe(live)
        try:
            predictions = live[0].model.predict_batch(
                np.stack([r.pixels for r in live]), stacked_inputs([r.inputs for r in live]))
        except Exception as exc:  # the pass failed: every request in it gets the error
            log.exception("inference failed for a batch of %d", len(live))
            for request in live:
                request.future.set_exception(exc)
            return
        for request, prediction in zip(live, predictions, strict=True):
            request.future.set_result(prediction)

    def _observe(self, batch: list[_Request]) -> None:
        if self.observer is None:
            return
        now = time.monotonic()
        try:
            self.observer.batch_started(len(batch), [now - r.arrived for r in batch])
        except Exception:  # metrics must never stop the passes
            log.exception("observing a batch failed")
