"""What the prediction log's writer thread (``recorder``) does with one batch taken from its
queue: records hashed (and their images kept), consecutive records written in one round trip,
shadow answers after them in order, and what the store refuses tried once more, then given up.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from shared.errors import CxrError
from shared.ml.preprocessing import decode_image
from shared.monitoring.kept_images import KeptImages
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.records import LoggedPrediction, ShadowAnswer

log = logging.getLogger(__name__)

# What an outage of a store raises: it never fails an answer.
STORE_ERRORS = (redis.RedisError, sqlite3.Error, CxrError, OSError)


class RecorderObserver(Protocol):
    def prediction_logged(self, dropped: bool) -> None:
        """An answer was written to the prediction log, or dropped."""


@dataclass
class Answered:
    """An answered image's record, and the bytes sent (hashed, and kept where asked)."""

    record: LoggedPrediction
    image: bytes | None


@dataclass(frozen=True)
class Shadowed:
    prediction_id: str
    answer: ShadowAnswer


@dataclass
class Counted:
    """Counters of a shadow version to add; the writer sums them before writing."""

    version: str
    seen: int = 0
    dropped: int = 0
    failed: int = 0
    error: str | None = None

    def add(self, other: Counted) -> None:
        self.seen += other.seen
        self.dropped += other.dropped
        self.failed += other.failed
        self.error = other.error or self.error


Item = Answered | Shadowed | Counted
# What one store call writes: consecutive records at once, or one shadow answer.
_Write = list[LoggedPrediction] | Shadowed


@dataclass(frozen=True)
class BatchWriter:
    log: PredictionLog
    kept: KeptImages | None
    keep_images: bool
    max_image_pixels: int
    observer: RecorderObserver | None = None

    def write(self, items: list[Answered | Shadowed],
              pause: Callable[[], None]) -> list[Answered | Shadowed]:
        """Write ``items`` in order; what the store refuses is tried once more after
        ``pause``. Returns what was given up (its kept images removed: nothing would prune
        them)."""
        writes = _writes([self._prepared(item) for item in items])
        done = self._write(writes, 0)
        if done < len(writes):
            pause()
            done = self._write(writes, done)
        lost = writes[done:]
        records = [r for w in lost if isinstance(w, list) for r in w]
        self._forget_images([r.prediction_id for r in records if r.image_kept])
        return [Answered(r, None) for r in records] + [w for w in lost if isinstance(w, Shadowed)]

    def write_counts(self, counts: dict[str, Counted]) -> dict[str, Counted]:
        """Write summed counters; returns those the store refused, to add to later."""
        refused: dict[str, Counted] = {}
        for version, c in counts.items():
            try:
                self.log.count_shadow(version, seen=c.seen, dropped=c.dropped, failed=c.failed,
                                      error=c.error)
            except STORE_ERRORS as exc:
                log.warning("cannot write the shadow's counters: %s", exc)
                refused[version] = c
        return refused

    def _prepared(self, item: Answered | Shadowed) -> Answered | Shadowed:
        """A record with its image hashed, and kept where asked (a failure to keep it only
        leaves ``image_kept`` false)."""
        if not isinstance(item, Answered) or item.image is None:
            return item
        record, image = item.record, item.image
        record.image_sha256 = hashlib.sha256(image).hexdigest()
        if self.keep_images and self.kept is not None:
            try:
                self.kept.save(record.prediction_id,
                               decode_image(image, self.max_image_pixels).gray)
                record.image_kept = True
            except (CxrError, OSError, ValueError) as exc:
                log.warning("the image of prediction %s was not kept: %s",
                            record.prediction_id, exc)
        return Answered(record, None)

    def _write(self, writes: list[_Write], start: int) -> int:
        """Write from ``start`` on; returns where the store failed (or the end)."""
        for position in range(start, len(writes)):
            write = writes[position]
            try:
                if isinstance(write, list):
                    self.log.add(write)
                else:
                    self.log.add_shadow(write.prediction_id, write.answer)
            except STORE_ERRORS as exc:
                log.warning("cannot write to the prediction log: %s", exc)
                return position
            if isinstance(write, list) and self.observer is not None:
                for _ in write:
                    self.observer.prediction_logged(dropped=False)
        return len(writes)

    def _forget_images(self, ids: list[str]) -> None:
        if ids and self.kept is not None:
            try:
                self.kept.remove(ids)
            except OSError as exc:
                log.warning("cannot remove %d kept images: %s", len(ids), exc)


def _writes(items: list[Answered | Shadowed]) -> list[_Write]:
    """Consecutive records grouped into one write each, in order."""
    writes: list[_Write] = []
    for item in items:
        if isinstance(item, Shadowed):
            writes.append(item)
        elif writes and isinstance(writes[-1], list):
            writes[-1].append(item.record)
        else:
            writes.append([item.record])
    return writes
