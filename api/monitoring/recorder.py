"""The prediction log's writer: an answer hands its record over in microseconds, and one thread
writes records in batches, so that neither the store's round trips nor its outages reach an
answer.

One FIFO queue carries the answered images (with the bytes sent, hashed and, with
CXR_KEEP_IMAGES, kept as PNG on the writer thread), the shadow's answers and its counters, so
a shadow answer is always written after its record, and a counter after what it counts. The
writer sums the counters and writes them at most once a second. A full queue drops (counted,
warned once a minute); a batch the store refuses is tried once more, then dropped (counted):
``writing.BatchWriter``. The same thread prunes what is past the retention, at start and every
PRUNE_EVERY_S.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from api.monitoring.writing import (
    STORE_ERRORS,
    Answered,
    BatchWriter,
    Counted,
    Item,
    RecorderObserver,
    Shadowed,
)
from shared.monitoring.audit import AuditStore
from shared.monitoring.kept_images import KeptImages
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.records import LoggedPrediction, ShadowAnswer

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
COUNTS_EVERY_S = 1.0
RETRY_AFTER_S = 1.0
# Once woken by a first record, the writer waits this long for more to write them at once
# (a flush or a stop cuts it short).
LINGER_S = 0.05
WARN_EVERY_S = 60.0
# Items written per pass: one round trip for the records among them.
BATCH = 256
# Bytes sent that wait to be hashed (and kept): past this, the answer path hashes its own and
# its image is not kept, so that a stalled writer cannot hold gigabytes of uploads.
MAX_PENDING_IMAGE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Pruned:
    """What one pruning removed."""

    predictions: int
    images: int
    audit: int


class PredictionRecorder:
    """``kept`` is where kept images live (pruned with their records, kept now or not);
    ``keep_images`` whether new ones are kept."""

    def __init__(self, log: PredictionLog, kept: KeptImages | None, max_image_pixels: int, *,
                 keep_images: bool = False, audit: AuditStore | None = None,
                 max_pending: int = 4096, observer: RecorderObserver | None = None) -> None:
        self.log = log
        self.kept = kept
        self.audit = audit
        self._writer = BatchWriter(log, kept, keep_images, max_image_pixels, observer)
        self.max_pending = max_pending
        self.observer = observer
        self.dropped = 0  # records and shadow answers never written
        self._items: deque[Item] = deque()
        self._ready = threading.Condition()
        self._queued = 0  # items ever queued
        self._done = 0  # of those, items written or dropped
        self._pending_bytes = 0
        # Flushes asked for, and how many of them the writer has served (counters included).
        self._asked = self._served = 0
        self._stopping = False
        self._warned_at = -WARN_EVERY_S
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then end the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def record(self, record: LoggedPrediction, image: bytes | None = None) -> None:
        """Queue an answered image; never blocks. ``image``, the bytes sent, is hashed into
        the record's ``image_sha256`` (and kept, with ``keep_images``) on the writer thread."""
        if image is not None and self._pending_bytes + len(image) > MAX_PENDING_IMAGE_BYTES:
            record.image_sha256 = hashlib.sha256(image).hexdigest()
            image = None
        self._put(Answered(record, image), len(image) if image is not None else 0)

    def shadow_answered(self, prediction_id: str, answer: ShadowAnswer) -> None:
        """Queue the shadow's answer for an image recorded before; never blocks."""
        self._put(Shadowed(prediction_id, answer), 0)

    def count_shadow(self, version: str, *, seen: int = 0, dropped: int = 0, failed: int = 0,
                     error: str | None = None) -> None:
        """Add to a shadow version's counters; never blocks. Written within a second, never
        before the answers queued ahead of them, and never dropped (they are tiny, and the
        drops they count must not vanish with them)."""
        self._put(Counted(version, seen, dropped, failed, error), 0, bounded=False)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far, counters included, is written (or dropped);
        False when ``timeout`` passed first."""
        with self._ready:
            target = self._queued
            self._asked += 1
            asked = self._asked
            self._ready.notify_all()
            return self._ready.wait_for(
                lambda: self._done >= target and self._served >= asked, timeout)

    def prune_now(self) -> Pruned:
        """Remove the records past the log's retention with their kept images, and the audit
        records past the trail's."""
        removed = self.log.prune(self.log.clock() - self.log.retention)
        images = self.kept.remove(removed) if self.kept is not None and removed else 0
        audited = (self.audit.prune(self.audit.clock() - self.audit.retention)
                   if self.audit is not None else 0)
        if removed or audited:
            log.info("pruned %d logged predictions (%d kept images) and %d audit records",
                     len(removed), images, audited)
        return Pruned(len(removed), images, audited)

    def _put(self, item: Item, size: int, bounded: bool = True) -> None:
        with self._ready:
            stopping = self._stopping
            if not stopping and (len(self._items) < self.max_pending or not bounded):
                self._items.append(item)
                self._queued += 1
                self._pending_bytes += size
                if len(self._items) == 1:  # else the writer is busy, or already woken
                    self._ready.notify()
                return
        self._lost([item], "it is stopping" if stopping else "its queue is full")

    def _lost(self, items: Sequence[Item], why: str) -> None:
        """Count items never written; warn at most once a minute."""
        with self._ready:
            self.dropped += len(items)
        if self.observer is not None:
            for _ in (i for i in items if isinstance(i, Answered)):
                self.observer.prediction_logged(dropped=True)
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("the prediction log dropped %d items (%d in all so far): %s",
                        len(items), self.dropped, why)

    def _run(self) -> None:
        self._prune_logged()
        next_prune = time.monotonic() + PRUNE_EVERY_S
        next_counts = time.monotonic()
        counts: dict[str, Counted] = {}  # summed, not yet written
        while True:
            items, asked, drained, finished = self._take(next_prune, next_counts, bool(counts))
            self._write_batch([i for i in items if not isinstance(i, Counted)])
            for item in items:  # after the answers ahead of them are written
                if isinstance(item, Counted):
                    counts.setdefault(item.version, Counted(item.version)).add(item)
            if counts and (asked > self._served or finished
                           or time.monotonic() >= next_counts):
                counts = self._writer.write_counts(counts)
                next_counts = time.monotonic() + COUNTS_EVERY_S
            with self._ready:
                self._done += len(items)
                if drained:  # everything queued before the flushes asked so far is written
                    self._served = asked
                self._ready.notify_all()
            if finished:
                return
            if time.monotonic() >= next_prune:
                self._prune_logged()
                next_prune = time.monotonic() + PRUNE_EVERY_S

    def _take(self, next_prune: float, next_counts: float,
              counting: bool) -> tuple[list[Item], int, bool, bool]:
        """The next items (after a wait for them, or for what else is due), the flushes asked
        so far, whether the queue is now empty, and whether the writer is done."""
        with self._ready:
            if not (self._items or self._stopping or self._asked > self._served):
                due = min(next_prune, next_counts) if counting else next_prune
                self._ready.wait(max(0.0, due - time.monotonic()))
            if self._items:
                self._ready.wait_for(lambda: (self._stopping or self._asked > self._served
                                              or len(self._items) >= BATCH), LINGER_S)
            items = [self._items.popleft() for _ in range(min(BATCH, len(self._items)))]
            self._pending_bytes -= sum(len(i.image) for i in items
                                       if isinstance(i, Answered) and i.image is not None)
            drained = not self._items
            return items, self._asked, drained, self._stopping and drained

    def _write_batch(self, items: list[Answered | Shadowed]) -> None:
        def pause() -> None:
            with self._ready:
                self._ready.wait_for(lambda: self._stopping, RETRY_AFTER_S)

        lost = self._writer.write(items, pause)
        if lost:
            self._lost(lost, "the store failed twice")

    def _prune_logged(self) -> None:
        try:
            self.prune_now()
        except STORE_ERRORS as exc:
            log.warning("cannot prune the prediction log and the audit trail: %s", exc)

