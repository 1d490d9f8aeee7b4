"""The prediction log in Redis, shared by every API replica: one key per record (expiring with
the retention), sorted sets of ids by time (all, per version, labelled, per shadow version) and
a hash of counters per shadow version."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import redis

from shared.errors import PredictionNotFound
from shared.job_store import Clock, utc_now
from shared.monitoring.prediction_log import PredictionLog, not_found
from shared.monitoring.records import (
    ConfirmedLabel,
    LoggedPrediction,
    PredictionQuery,
    ShadowAnswer,
    ShadowCounts,
)

# A change to one record: applied to it, returns the index keys the record now belongs to.
Change = Callable[[LoggedPrediction], list[str]]


def _matches(record: LoggedPrediction, query: PredictionQuery, floor: datetime) -> bool:
    return (record.time >= floor
            and query.version in (None, record.version)
            and query.labelled in (None, record.confirmed is not None)
            and query.reliable in (None, record.reliable)
            and (query.shadow is None
                 or (record.shadow is not None and record.shadow.version == query.shadow)))


def _text(value: Any) -> str:
    """A Redis reply as text, whether or not the client decodes replies."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisPredictionLog(PredictionLog):
    """A change to a record is a WATCHed transaction, as RedisJobStore's; a query walks the
    narrowest index that its filters allow."""

    RECORD = "cxr:prediction:"
    INDEX = "cxr:predictions"
    BY_VERSION = "cxr:predictions:version:"
    LABELLED = "cxr:predictions:labelled"
    BY_SHADOW = "cxr:predictions:shadow:"
    # The per-version and per-shadow index keys that exist, so that prune needs no SCAN.
    INDEXES = "cxr:prediction-indexes"
    COUNTS = "cxr:shadow-counts:"
    # Shadow versions by the time their counters last moved, so that prune finds stale ones.
    SHADOWS = "cxr:shadow-versions"
    CHUNK = 500

    def __init__(self, client: redis.Redis, retention_days: float, *,
                 clock: Clock = utc_now) -> None:
        super().__init__(retention_days, clock=clock)
        self.client = client

    def _indexes(self, record: LoggedPrediction) -> list[str]:
        keys = [self.INDEX, self.BY_VERSION + record.version]
        if record.confirmed is not None:
            keys.append(self.LABELLED)
        if record.shadow is not None:
            keys.append(self.BY_SHADOW + record.shadow.version)
        return keys

    def _index(self, pipe: Any, record: LoggedPrediction, keys: list[str]) -> None:
        score = {record.prediction_id: record.time.timestamp()}
        for key in keys:
            pipe.zadd(key, score)
            if key.startswith((self.BY_VERSION, self.BY_SHADOW)):
                pipe.sadd(self.INDEXES, key)

    def add(self, records: Sequence[LoggedPrediction]) -> None:
        now, pipe = self.clock(), self.client.pipeline()
        for record in records:
            left = (self.retention - (now - record.time)).total_seconds()
            pipe.set(self.RECORD + record.prediction_id, record.model_dump_json(),
                     ex=max(1, math.ceil(left)))
            self._index(pipe, record, self._indexes(record))
        if records:
            pipe.execute()

    def get(self, prediction_id: str) -> LoggedPrediction:
        raw = self.client.get(self.RECORD + prediction_id)
        if raw is None:
            raise not_found(prediction_id)
        return self._visible(LoggedPrediction.model_validate_json(raw))

    def _change(self, prediction_id: str, change: Change) -> LoggedPrediction:
        key = self.RECORD + prediction_id

        result: list[LoggedPrediction] = []

        def transaction(pipe: Any) -> None:
            raw = pipe.get(key)
            if raw is None:
                raise not_found(prediction_id)
            record = self._visible(LoggedPrediction.model_validate_json(raw))
            keys = change(record)
            pipe.multi()
            pipe.set(key, record.model_dump_json(), keepttl=True)
            self._index(pipe, record, keys)
            result[:] = [record]

        self.client.transaction(transaction, key)
        return result[0]

    def confirm(self, prediction_id: str, confirmed: ConfirmedLabel) -> LoggedPrediction:
        def change(record: LoggedPrediction) -> list[str]:
            record.confirmed = confirmed
            return [self.LABELLED]

        return self._change(prediction_id, change)

    def add_shadow(self, prediction_id: str, answer: ShadowAnswer) -> None:
        def change(record: LoggedPrediction) -> list[str]:
            record.shadow = answer
            return [self.BY_SHADOW + answer.version]

        try:
            self._change(prediction_id, change)
        except PredictionNotFound:
            pass  # pruned while the shadow was scoring it

    def _narrowest(self, query: PredictionQuery) -> str:
        keys = [self.INDEX]
        if query.version is not None:
            keys.append(self.BY_VERSION + query.version)
        if query.labelled:
            keys.append(self.LABELLED)
        if query.shadow is not None:
            keys.append(self.BY_SHADOW + query.shadow)
        if len(keys) == 1:
            return keys[0]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        sizes = pipe.execute()
        return min(zip(sizes, keys, strict=True))[1]

    def query(self, query: PredictionQuery) -> list[LoggedPrediction]:
        floor, key = self._floor(query.since), self._narrowest(query)
        found: list[LoggedPrediction] = []
        seen: set[str] = set()
        offset = 0
        while query.limit is None or len(found) < query.limit:
            ids = [_text(i) for i in self.client.zrevrangebyscore(
                key, "+inf", floor.timestamp(), start=offset, num=self.CHUNK)]
            offset += len(ids)
            # ids that an insert pushed down the index come round again
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            raws = self.client.mget([self.RECORD + i for i in fresh]) if fresh else []
            records = (LoggedPrediction.model_validate_json(r) for r in raws if r is not None)
            found += [r for r in records if _matches(r, query, floor)]
            if len(ids) < self.CHUNK:
                break
        return found[:query.limit]

    def count(self, version: str) -> int:
        return int(self.client.zcount(self.BY_VERSION + version,
                                      self._floor().timestamp(), "+inf"))

    def count_shadow(self, version: str, *, seen: int = 0, dropped: int = 0, failed: int = 0,
                     error: str | None = None) -> None:
        key, pipe = self.COUNTS + version, self.client.pipeline()
        for field, amount in (("seen", seen), ("dropped", dropped), ("failed", failed)):
            pipe.hincrby(key, field, amount)
        if error is not None:
            pipe.hset(key, "last_error", error)
        pipe.expire(key, math.ceil(self.retention.total_seconds()))
        pipe.zadd(self.SHADOWS, {version: self.clock().timestamp()})
        pipe.execute()

    def shadow_counts(self, version: str) -> ShadowCounts:
        fields = {_text(k): _text(v) for k, v in self.client.hgetall(self.COUNTS + version).items()}
        return ShadowCounts(seen=int(fields.get("seen", 0)), dropped=int(fields.get("dropped", 0)),
                            failed=int(fields.get("failed", 0)),
                            last_error=fields.get("last_error"))

    def prune(self, before: datetime) -> list[str]:
        edge = f"({before.timestamp()!r}"  # exclusive: strictly older than before
        removed: list[str] = []
        while ids := [_text(i) for i in self.client.zrangebyscore(
                self.INDEX, "-inf", edge, start=0, num=self.CHUNK)]:
            pipe = self.client.pipeline()
            pipe.delete(*(self.RECORD + i for i in ids))
            pipe.zrem(self.INDEX, *ids)
            pipe.execute()
            removed += ids
        pipe = self.client.pipeline()
        for key in [self.LABELLED, *map(_text, self.client.smembers(self.INDEXES))]:
            pipe.zremrangebyscore(key, "-inf", edge)
        stale = [_text(v) for v in self.client.zrangebyscore(self.SHADOWS, "-inf", edge)]
        if stale:
            pipe.delete(*(self.COUNTS + v for v in stale))
            pipe.zrem(self.SHADOWS, *stale)
        pipe.execute()
        return removed
