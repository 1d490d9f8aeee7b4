"""After a publish: the audit trail records it (and its activation), and with
CXR_KEEP_CANDIDATES the oldest candidates go, never what is served, shadowed or used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.config import Settings
from shared.job_store import open_job_store
from shared.manifest import Promotion
from shared.monitoring.audit import open_audit_store
from shared.monitoring.records import AuditQuery, AuditRecord
from shared.registry.files import MODEL_FILE
from shared.registry.local import LocalRegistry
from shared.schemas import EvaluationParams
from tests.helpers.versions import draft
from worker.publishing.publish import after_publish

START = datetime(2026, 1, 1, tzinfo=UTC)
KEPT_AS_CANDIDATE = Promotion(mode="if_better", metric="balanced_accuracy", margin=0.0,
                              activated=False, reason="balanced_accuracy 0.5 is worse than "
                              "the active version's 0.9 by more than 0.0; kept as a candidate")


def _publish(registry: LocalRegistry, hour: int, activate: bool = False) -> str:
    staging = registry.new_staging()
    (staging / MODEL_FILE).write_bytes(f"model of hour {hour}".encode())
    return registry.publish(staging, draft(created_at=START + timedelta(hours=hour)),
                            activate=activate)


def _trail(settings: Settings) -> list[tuple[str, str | None, str | None]]:
    records: list[AuditRecord] = open_audit_store(settings).query(AuditQuery())
    assert all(r.actor == "worker" and r.role == "worker" and r.outcome == "ok"
               for r in records)
    return sorted((r.action, r.target, r.detail) for r in records)


def test_a_candidate_publish_prunes_the_oldest_candidates(settings: Settings) -> None:
    settings = settings.model_copy(update={"keep_candidates": 1})
    registry = LocalRegistry(settings.models_dir)
    active = _publish(registry, 0, activate=True)
    oldest, used, shadowed, older = (_publish(registry, hour) for hour in range(1, 5))
    registry.set_shadow(shadowed)
    open_job_store(settings).create("evaluating", EvaluationParams(dataset="x", version=used))
    new = _publish(registry, 5)
    pruned = after_publish(settings, registry, new, activated=False, promotion=KEPT_AS_CANDIDATE)
    # Candidates: oldest, older and new; the newest one (new) is kept.
    assert pruned == [oldest, older]
    assert {m.version for m in registry.versions()} == {active, used, shadowed, new}
    assert _trail(settings) == sorted([
        ("model.publish", new, KEPT_AS_CANDIDATE.reason),
        ("model.prune", oldest, "keep_candidates=1"),
        ("model.prune", older, "keep_candidates=1")])


def test_the_version_just_published_is_never_pruned_by_its_own_publish(
        settings: Settings) -> None:
    settings = settings.model_copy(update={"keep_candidates": 0})
    registry = LocalRegistry(settings.models_dir)
    active = _publish(registry, 0, activate=True)
    new = _publish(registry, 1)
    assert after_publish(settings, registry, new, activated=False) == []
    assert {m.version for m in registry.versions()} == {active, new}
    assert _trail(settings) == [("model.publish", new, "published as a candidate")]


def test_an_activated_publish_is_audited_and_nothing_pruned_by_default(
        settings: Settings) -> None:
    assert settings.keep_candidates is None
    registry = LocalRegistry(settings.models_dir)
    versions = [_publish(registry, hour) for hour in range(3)]
    new = _publish(registry, 3, activate=True)
    assert after_publish(settings, registry, new, activated=True) == []
    assert {m.version for m in registry.versions()} == {*versions, new}
    assert _trail(settings) == [("activate", new, None), ("model.publish", new, "activated")]


def test_a_broken_audit_trail_fails_nothing(settings: Settings,
                                            caplog: pytest.LogCaptureFixture) -> None:
    settings = settings.model_copy(update={"keep_candidates": 0})
    registry = LocalRegistry(settings.models_dir)
    replaced = _publish(registry, 0, activate=True)
    old = _publish(registry, 1)
    new = _publish(registry, 2, activate=True)
    (settings.state_dir / "audit.sqlite").mkdir(parents=True)  # no database can open here
    assert after_publish(settings, registry, new, activated=True) == [replaced, old]
    assert "could not open the audit trail" in caplog.text
