"""The prediction log's writer against the real stores: batches written in order, images hashed
and kept off the answer path, a full queue and a store outage dropping (counted) instead of
failing anyone, and retention pruning records, kept images and audit records."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.metrics import ServiceMetrics
from api.monitoring.recorder import PredictionRecorder, Pruned
from shared.config import Settings
from shared.errors import PredictionNotFound
from shared.monitoring.audit import audit_now, open_audit_store
from shared.monitoring.kept_images import KeptImages
from shared.monitoring.prediction_log import PredictionLog
from shared.monitoring.prediction_log_redis import RedisPredictionLog
from shared.monitoring.records import LoggedPrediction, ShadowAnswer, ShadowCounts
from shared.monitoring.stores import open_prediction_log
from tests.helpers.clock import ManualClock
from tests.helpers.env import sample_files
from tests.helpers.services import free_port

DAY_S = 24 * 3600.0


def _record(clock: ManualClock) -> LoggedPrediction:
    return LoggedPrediction(prediction_id=uuid.uuid4().hex, time=clock(), version="v1",
                            label="a", probabilities={"a": 0.7, "b": 0.3}, reliable=True,
                            image_sha256="", source="api")


def _logged(metrics: ServiceMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("cxr_prediction_log_records_total",
                                             {"outcome": outcome}) or 0.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(settings: Settings, clock: ManualClock) -> PredictionLog:
    return open_prediction_log(settings, clock=clock)


@pytest.fixture
def xray(radiography_root: Path) -> bytes:
    return sample_files(radiography_root, 1)["Normal"][0].read_bytes()


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics(jobs=lambda: None)


Make = Callable[..., PredictionRecorder]


@pytest.fixture
def make(settings: Settings, metrics: ServiceMetrics) -> Iterator[Make]:
    """Recorders on a store, stopped after the test; the writer thread is not started."""
    made: list[PredictionRecorder] = []

    def recorder(store: PredictionLog, **options: object) -> PredictionRecorder:
        made.append(PredictionRecorder(store, KeptImages(settings.effective_kept_images_dir),
                                       settings.max_image_pixels, observer=metrics,
                                       **options))  # type: ignore[arg-type]
        return made[-1]

    yield recorder
    for each in made:
        each.stop()


def test_records_shadow_answers_and_counters_are_written_in_order(
        store: PredictionLog, settings: Settings, metrics: ServiceMetrics, clock: ManualClock,
        xray: bytes, make: Make) -> None:
    recorder = make(store)
    recorder.start()
    records = [_record(clock) for _ in range(3)]
    for record in records:
        recorder.record(record, xray)
    # queued right behind its record: the writer must not write it first
    recorder.shadow_answered(records[0].prediction_id, ShadowAnswer(
        version="v2", label="b", probabilities={"a": 0.4, "b": 0.6}, reliable=False))
    recorder.count_shadow("v2", seen=1)
    recorder.count_shadow("v2", seen=1, dropped=1, error="a scoring error")
    assert recorder.flush()
    for record in records:
        written = store.get(record.prediction_id)
        assert written.image_sha256 == hashlib.sha256(xray).hexdigest()
        assert not written.image_kept  # CXR_KEEP_IMAGES is off
    assert store.get(records[0].prediction_id).shadow is not None
    assert store.shadow_counts("v2") == ShadowCounts(seen=2, dropped=1,
                                                     last_error="a scoring error")
    assert _logged(metrics, "written") == 3 and recorder.dropped == 0
    assert not settings.effective_kept_images_dir.exists()


def test_kept_images_are_the_decoded_pixels_as_png(
        store: PredictionLog, settings: Settings, metrics: ServiceMetrics, clock: ManualClock,
        xray: bytes, make: Make) -> None:
    recorder = make(store, keep_images=True)
    recorder.start()
    record = _record(clock)
    recorder.record(record, xray)
    assert recorder.flush()
    assert store.get(record.prediction_id).image_kept
    kept = KeptImages(settings.effective_kept_images_dir).path(record.prediction_id)
    assert kept is not None
    with Image.open(kept) as image, Image.open(io.BytesIO(xray)) as sent:
        assert image.format == "PNG" and image.mode == "L" and image.size == sent.size


def test_a_full_queue_drops_and_counts_without_waiting(
        store: PredictionLog, metrics: ServiceMetrics, clock: ManualClock,
        make: Make) -> None:
    recorder = make(store, max_pending=2)
    records = [_record(clock) for _ in range(3)]
    for record in records:  # the writer is not started: nothing leaves the queue
        recorder.record(record, b"bytes")
    assert recorder.dropped == 1 and _logged(metrics, "dropped") == 1
    recorder.start()
    assert recorder.flush()
    assert [store.get(r.prediction_id).prediction_id for r in records[:2]] == [
        r.prediction_id for r in records[:2]]
    with pytest.raises(PredictionNotFound):
        store.get(records[2].prediction_id)


def test_a_store_outage_is_retried_once_then_dropped(
        settings: Settings, metrics: ServiceMetrics, clock: ManualClock, xray: bytes,
        make: Make) -> None:
    # Nothing listens on the port: each write fails, as during a Redis restart (at once,
    # without the client's own retries).
    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    down = RedisPredictionLog(client, 30, clock=clock)
    recorder = make(down, keep_images=True)
    recorder.start()
    records = [_record(clock) for _ in range(2)]
    for record in records:
        recorder.record(record, xray)
    recorder.shadow_answered(records[0].prediction_id, ShadowAnswer(
        version="v2", label="a", probabilities={"a": 1.0}, reliable=True))
    recorder.count_shadow("v2", seen=1)
    assert recorder.flush(timeout=20)
    assert recorder.dropped == 3 and _logged(metrics, "dropped") == 2
    # an image whose record was never written would never be pruned: it goes at once
    assert list(settings.effective_kept_images_dir.rglob("*.png")) == []


def test_retention_prunes_records_kept_images_and_audit_records(
        settings: Settings, metrics: ServiceMetrics, clock: ManualClock, xray: bytes,
        make: Make) -> None:
    store = open_prediction_log(settings, clock=clock)
    audit = open_audit_store(settings, clock=clock)
    kept = KeptImages(settings.effective_kept_images_dir)
    recorder = make(store, keep_images=True, audit=audit)
    recorder.start()
    old = _record(clock)
    recorder.record(old, xray)
    audit_now(audit, actor="admin", role="admin", action="activate", target="v1",
              outcome="ok")
    assert recorder.flush() and kept.path(old.prediction_id) is not None
    clock.advance(settings.prediction_log_days * DAY_S + 1)
    new = _record(clock)
    recorder.record(new, xray)
    assert recorder.flush()
    assert recorder.prune_now() == Pruned(predictions=1, images=1, audit=0)
    with pytest.raises(PredictionNotFound):
        store.get(old.prediction_id)
    assert kept.path(old.prediction_id) is None
    assert store.get(new.prediction_id).image_kept and kept.path(new.prediction_id) is not None
    clock.advance(settings.audit_days * DAY_S)
    assert recorder.prune_now() == Pruned(predictions=1, images=1, audit=1)
    assert list(settings.effective_kept_images_dir.rglob("*.png")) == []
