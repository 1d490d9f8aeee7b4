"""The audit trail on both stores (SQLite and Redis): filters, order, retention, and the JSON
log line each record also becomes."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from shared.config import Settings
from shared.logs import configure_logging, log_context
from shared.monitoring.audit import (
    AuditStore,
    RedisAuditStore,
    SqliteAuditStore,
    audit_now,
    open_audit_store,
)
from shared.monitoring.records import AuditQuery, AuditRecord
from tests.helpers.clock import ManualClock

DAYS = 365.0
DAY = 86400.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> AuditStore:
    if request.param == "sqlite":
        return SqliteAuditStore(tmp_path / "state" / "audit.sqlite", DAYS, clock=clock)
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    audit = RedisAuditStore(client, DAYS, clock=clock)
    audit.CHUNK = 3  # so that every query walks the set over several chunks
    return audit


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("info", "json", out)
    yield out
    root.handlers, root.level = handlers, level
    logging.captureWarnings(False)


def _trail(store: AuditStore, clock: ManualClock) -> list[AuditRecord]:
    """Ten records a minute apart; the last two share one time."""
    done = []
    for n, (actor, action, outcome) in enumerate(itertools.islice(itertools.cycle(
            [("admin", "activate", "ok"), ("reader", "retrain", "refused"),
             ("labeler", "label", "ok"), ("admin", "retrain", "failed")]), 10)):
        done.append(audit_now(store, actor=actor, role=actor, action=action,
                              target=f"t{n % 3}", outcome=outcome,
                              status=403 if outcome == "refused" else None))
        if n < 8:
            clock.advance(60)
    return done


def test_records_come_back_newest_first_with_every_filter(store: AuditStore,
                                                          clock: ManualClock) -> None:
    done = _trail(store, clock)
    newest_first = done[::-1]
    assert store.query(AuditQuery(limit=None)) == newest_first
    assert store.query(AuditQuery(limit=4)) == newest_first[:4]
    since, answered = done[5].time, 0
    for action, actor, target, outcome, after in itertools.product(
            (None, "retrain", "label", "delete"), (None, "admin", "reader"), (None, "t0", "t2"),
            (None, "ok", "failed"), (None, since)):
        query = AuditQuery(action=action, actor=actor, target=target, outcome=outcome,
                           since=after, limit=None)
        expected = [r for r in newest_first
                    if action in (None, r.action) and actor in (None, r.actor)
                    and target in (None, r.target) and outcome in (None, r.outcome)
                    and (after is None or r.time >= after)]
        assert store.query(query) == expected, query
        answered += bool(expected)
    assert answered > 30  # of 144: the filters were tried on records that match them


def test_audit_now_stamps_the_clock_and_the_request(store: AuditStore,
                                                    clock: ManualClock) -> None:
    with log_context(request="req-7"):
        first = audit_now(store, actor="admin", role="admin", action="activate", target="v2",
                          outcome="ok", status=200, detail="was v1")
    second = audit_now(store, actor=None, role=None, action="activate", target="v2",
                       outcome="refused", status=401, error="unauthorized",
                       request_id="req-8")
    assert (first.time, first.request_id, second.request_id) == (clock(), "req-7", "req-8")
    assert store.query(AuditQuery(target="v2")) == [second, first]


def test_retention_hides_and_prune_removes(store: AuditStore, clock: ManualClock) -> None:
    audit_now(store, actor="admin", role="admin", action="retrain", target=None, outcome="ok")
    clock.advance(DAY)
    edge = clock()
    kept = audit_now(store, actor="admin", role="admin", action="label", target="p1",
                     outcome="ok")
    assert store.prune(edge) == 1
    assert store.prune(edge) == 0
    assert store.query(AuditQuery()) == [kept]
    clock.advance(DAYS * DAY + 1)  # past the retention, not yet pruned
    assert store.query(AuditQuery()) == []
    assert store.prune(clock() - timedelta(days=DAYS)) == 1


def test_each_record_is_a_json_log_line(store: AuditStore, stream: io.StringIO) -> None:
    with log_context(request="req-3"):
        record = audit_now(store, actor="labeler", role="labeler", action="label",
                           target="p42", outcome="ok", status=200, detail="covid")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert (line["logger"], line["level"], line["request_id"]) == ("cxr.audit", "INFO", "req-3")
    assert line["message"] == "audit label p42 ok"
    assert AuditRecord.model_validate(line["audit"]) == record
    assert "key" not in json.dumps(line["audit"])  # the key's name, never the key


def test_the_store_sits_beside_the_broker(settings: Settings, redis_url: str) -> None:
    sqlite_store = open_audit_store(settings)
    assert isinstance(sqlite_store, SqliteAuditStore)
    assert sqlite_store.path == settings.state_dir / "audit.sqlite"
    assert sqlite_store.retention == timedelta(days=settings.audit_days)
    redis_store = open_audit_store(settings.model_copy(update={"broker_url": redis_url,
                                                               "audit_days": 10.0}))
    assert isinstance(redis_store, RedisAuditStore)
    assert redis_store.retention == timedelta(days=10)
