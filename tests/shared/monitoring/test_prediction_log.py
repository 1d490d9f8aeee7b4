"""The prediction log on both stores (SQLite and Redis): filters, order, labels, shadow answers,
counters and retention. Time moves on a hand-driven clock."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from shared.config import Settings
from shared.errors import PredictionNotFound
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.prediction_log_redis import RedisPredictionLog
from shared.monitoring.prediction_log_sqlite import SqlitePredictionLog
from shared.monitoring.records import (
    ConfirmedLabel,
    LoggedPrediction,
    PredictionQuery,
    ShadowAnswer,
)
from shared.monitoring.stores import open_prediction_log
from tests.helpers.clock import ManualClock

DAYS = 30.0
DAY = 86400.0
LABELLED_AT = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "redis"])
def log(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> PredictionLog:
    if request.param == "sqlite":
        return SqlitePredictionLog(tmp_path / "state" / "predictions.sqlite", DAYS, clock=clock)
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    store = RedisPredictionLog(client, DAYS, clock=clock)
    store.CHUNK = 3  # so that every query walks its index over several chunks
    return store


def _record(clock: ManualClock, n: int, *, version: str = "v1", reliable: bool = True,
            label: str = "normal") -> LoggedPrediction:
    other = "covid" if label == "normal" else "normal"
    return LoggedPrediction(
        prediction_id=f"p{n:03d}", time=clock(), version=version, label=label,
        probabilities={label: 0.8, other: 0.2}, reliable=reliable, reasons=[],
        shift_score=0.1, shifted=False, image_sha256=f"{n:064x}", source="api")


def _label(label: str, by: str = "reader-1") -> ConfirmedLabel:
    return ConfirmedLabel(label=label, by=by, role="labeler", at=LABELLED_AT)


def _shadow(version: str, label: str = "covid") -> ShadowAnswer:
    return ShadowAnswer(version=version, label=label, probabilities={label: 0.6},
                        reliable=False, shifted=None)


def _ids(records: list[LoggedPrediction]) -> list[str]:
    return [r.prediction_id for r in records]


def _fill(log: PredictionLog, clock: ManualClock) -> list[LoggedPrediction]:
    """Twelve records a minute apart: versions, reliability, labels and shadows mixed."""
    records = []
    for n in range(12):
        records.append(_record(clock, n, version=("v1", "v2")[n % 2], reliable=n % 3 != 0))
        clock.advance(60)
    log.add(records[:5])
    log.add(records[5:])
    for n in (1, 4, 7, 10):
        log.confirm(f"p{n:03d}", _label("covid"))
    for n in (0, 1, 2, 3, 8):
        log.add_shadow(f"p{n:03d}", _shadow("v3"))
    log.add_shadow("p009", _shadow("v4"))
    return [log.get(r.prediction_id) for r in records]


def test_a_record_comes_back_as_added(log: PredictionLog, clock: ManualClock) -> None:
    record = _record(clock, 1).model_copy(update={"reasons": ["low confidence"],
                                                  "image_kept": True, "request_id": "r-1"})
    log.add([record])
    assert log.get("p001") == record
    assert log.get("p001").right is None
    with pytest.raises(PredictionNotFound):
        log.get("nope")
    with pytest.raises(PredictionNotFound):
        log.confirm("nope", _label("covid"))
    log.add_shadow("nope", _shadow("v3"))  # a record already gone: nothing, no error
    log.add([])


def test_every_filter_and_combination(log: PredictionLog, clock: ManualClock) -> None:
    stored = _fill(log, clock)
    since = stored[4].time
    newest_first, answered = stored[::-1], 0
    for version, labelled, reliable, shadow, after in itertools.product(
            (None, "v1", "v2", "v9"), (None, True, False), (None, True, False),
            (None, "v3", "v4"), (None, since)):
        query = PredictionQuery(version=version, labelled=labelled, reliable=reliable,
                                shadow=shadow, since=after, limit=None)
        expected = [r for r in newest_first
                    if version in (None, r.version)
                    and labelled in (None, r.confirmed is not None)
                    and reliable in (None, r.reliable)
                    and (shadow is None or (r.shadow and r.shadow.version == shadow))
                    and (after is None or r.time >= after)]
        assert log.query(query) == expected, query
        answered += bool(expected)
    assert answered > 80  # of 144: the filters were tried on records that match them


def test_newest_first_up_to_the_limit(log: PredictionLog, clock: ManualClock) -> None:
    stored = _fill(log, clock)
    assert _ids(log.query(PredictionQuery(limit=4))) == _ids(stored[::-1][:4])
    assert _ids(log.query(PredictionQuery())) == _ids(stored[::-1])  # default 100
    v2 = [r for r in stored if r.version == "v2"][::-1]
    assert _ids(log.query(PredictionQuery(version="v2", reliable=True, limit=2))) == _ids(
        [r for r in v2 if r.reliable][:2])
    assert log.query(PredictionQuery(version="v9")) == []


def test_a_label_is_recorded_and_replaced(log: PredictionLog, clock: ManualClock) -> None:
    log.add([_record(clock, 1, label="normal"), _record(clock, 2)])
    first = log.confirm("p001", _label("covid"))
    assert first.confirmed == _label("covid") and first.right is False
    again = log.confirm("p001", _label("normal", by="reader-2"))
    assert log.get("p001") == again and again.right is True
    assert again.confirmed is not None and again.confirmed.by == "reader-2"
    assert _ids(log.query(PredictionQuery(labelled=True))) == ["p001"]
    assert _ids(log.query(PredictionQuery(labelled=False))) == ["p002"]


def test_a_shadow_answer_is_kept_beside_the_answer(log: PredictionLog,
                                                   clock: ManualClock) -> None:
    log.add([_record(clock, 1), _record(clock, 2)])
    log.confirm("p001", _label("covid"))
    log.add_shadow("p001", _shadow("v3"))
    record = log.get("p001")
    assert record.shadow == _shadow("v3") and record.confirmed == _label("covid")
    assert _ids(log.query(PredictionQuery(shadow="v3"))) == ["p001"]
    assert log.query(PredictionQuery(shadow="v4")) == []


def test_labels_and_shadow_answers_at_once_both_stay(log: PredictionLog,
                                                     clock: ManualClock) -> None:
    log.add([_record(clock, n) for n in range(6)])

    def label() -> None:
        for n in range(6):
            log.confirm(f"p{n:03d}", _label("covid"))

    def shadow() -> None:
        for n in range(6):
            log.add_shadow(f"p{n:03d}", _shadow("v3"))

    threads = [threading.Thread(target=label), threading.Thread(target=shadow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.confirmed and r.shadow for r in log.query(PredictionQuery()))
    assert len(log.query(PredictionQuery(shadow="v3", labelled=True))) == 6


def test_shadow_counters_accumulate(log: PredictionLog) -> None:
    assert log.shadow_counts("v3").model_dump() == {"seen": 0, "dropped": 0, "failed": 0,
                                                     "last_error": None}
    log.count_shadow("v3", seen=5)
    log.count_shadow("v3", seen=2, dropped=3)
    log.count_shadow("v3", failed=1, error="out of memory")
    log.count_shadow("v3", seen=1)
    log.count_shadow("v4", dropped=1)
    counts = log.shadow_counts("v3")
    assert (counts.seen, counts.dropped, counts.failed) == (8, 3, 1)
    assert counts.last_error == "out of memory"
    assert log.shadow_counts("v4").dropped == 1 and log.shadow_counts("v4").seen == 0


def test_count_and_reads_keep_to_the_retention(log: PredictionLog, clock: ManualClock) -> None:
    log.add([_record(clock, 1), _record(clock, 2, version="v2")])
    clock.advance(10 * DAY)
    log.add([_record(clock, 3), _record(clock, 4)])
    assert (log.count("v1"), log.count("v2"), log.count("v9")) == (3, 1, 0)
    clock.advance(25 * DAY)  # the first two are now 35 days old
    assert (log.count("v1"), log.count("v2")) == (2, 0)
    assert _ids(log.query(PredictionQuery(limit=None))) == ["p004", "p003"]
    with pytest.raises(PredictionNotFound):
        log.get("p001")
    with pytest.raises(PredictionNotFound):
        log.confirm("p001", _label("covid"))


def test_prune_removes_old_records_and_returns_their_ids(log: PredictionLog,
                                                         clock: ManualClock) -> None:
    log.add([_record(clock, 1), _record(clock, 2, version="v2")])
    log.confirm("p002", _label("covid"))
    log.add_shadow("p001", _shadow("v3"))
    log.count_shadow("v3", seen=1)
    clock.advance(DAY)
    edge = clock()
    log.add([_record(clock, 3)])
    log.count_shadow("v4", seen=1)
    assert sorted(log.prune(edge)) == ["p001", "p002"]
    assert log.prune(edge) == []
    for gone in ("p001", "p002"):
        with pytest.raises(PredictionNotFound):
            log.get(gone)
    assert _ids(log.query(PredictionQuery(limit=None))) == ["p003"]
    assert log.query(PredictionQuery(labelled=True)) == []
    assert log.query(PredictionQuery(shadow="v3")) == []
    assert (log.count("v1"), log.count("v2")) == (1, 0)
    assert log.shadow_counts("v3").seen == 0 and log.shadow_counts("v4").seen == 1


def test_redis_prune_returns_ids_whose_records_expired(redis_url: str,
                                                      clock: ManualClock) -> None:
    client = redis.Redis.from_url(redis_url)
    log = RedisPredictionLog(client, DAYS, clock=clock)
    log.add([_record(clock, 1)])
    ttl = client.ttl("cxr:prediction:p001")
    assert DAYS * DAY - 5 <= ttl <= DAYS * DAY
    clock.advance(DAY)
    client.delete("cxr:prediction:p001")  # expired by Redis before the prune ran
    assert log.prune(clock()) == ["p001"]
    assert client.zcard("cxr:predictions") == 0
    assert client.exists("cxr:predictions:version:v1") == 0


def test_redis_keys_expire_with_the_record_age(redis_url: str, clock: ManualClock) -> None:
    client = redis.Redis.from_url(redis_url)
    log = RedisPredictionLog(client, DAYS, clock=clock)
    old = _record(clock, 1)
    clock.advance(20 * DAY)
    log.add([old])
    log.confirm("p001", _label("covid"))  # a change keeps the expiry
    assert 10 * DAY - 5 <= client.ttl("cxr:prediction:p001") <= 10 * DAY


def test_the_store_sits_beside_the_broker(settings: Settings, redis_url: str) -> None:
    sqlite_log = open_prediction_log(settings)
    assert isinstance(sqlite_log, SqlitePredictionLog)
    assert sqlite_log.path == settings.state_dir / "predictions.sqlite"
    assert sqlite_log.retention == timedelta(days=settings.prediction_log_days)
    redis_settings = settings.model_copy(update={"broker_url": redis_url,
                                                 "prediction_log_days": 7.0})
    redis_log = open_prediction_log(redis_settings)
    assert isinstance(redis_log, RedisPredictionLog)
    assert redis_log.retention == timedelta(days=7)
