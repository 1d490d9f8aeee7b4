"""The promotion gate: a worse version waits as a candidate, a better one becomes active."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import Settings
from shared.datasets import discover
from shared.local_registry import LocalRegistry
from shared.registry import ActivePointer
from shared.reliability import ReliabilityRecord
from shared.schemas import TrainingParams
from tests.worker.test_training import TINY, Recorder
from worker.jobs import train_and_publish
from worker.promotion import chance_reason, decide

ACTIVE = ActivePointer("20260101-000000-aaaaaa", 3)


@pytest.mark.parametrize(("new", "old", "activated"), [
    (0.80, 0.90, False),   # worse by more than the margin: candidate
    (0.895, 0.90, True),   # worse, but within the margin
    (0.95, 0.90, True),    # better
])
def test_if_better_compares_within_the_margin(new: float, old: float, activated: bool) -> None:
    decision = decide("if_better", "balanced_accuracy", 0.01, new, ACTIVE, old)
    assert decision["activated"] is activated
    assert decision["active_version"] == ACTIVE.version
    assert ("candidate" in decision["reason"]) is not activated


def test_a_version_no_better_than_chance_is_never_promoted() -> None:
    chance = "the test balanced accuracy interval [0.2, 0.6] includes chance (0.333)"
    first = decide("if_better", "accuracy", 0.0, 0.5, None, None, chance=chance)
    assert first["activated"] is False and "includes chance" in first["reason"]
    better = decide("if_better", "accuracy", 0.0, 0.99, ACTIVE, 0.1, chance=chance)
    assert better["activated"] is False and "candidate" in better["reason"]
    # asked for explicitly, it is activated (its answers say it is no better than chance)
    assert decide("always", "accuracy", 0.0, 0.5, None, None, chance=chance)["activated"]


def test_explicit_modes_and_first_version() -> None:
    assert decide("always", "accuracy", 0.0, 0.1, ACTIVE, 0.9)["activated"] is True
    assert decide("never", "accuracy", 0.0, 0.99, ACTIVE, 0.1)["activated"] is False
    assert decide("if_better", "accuracy", 0.0, 0.1, None, None)["activated"] is True
    incomparable = decide("if_better", "accuracy", 0.0, 0.9, ACTIVE, None, comparable=False)
    assert incomparable["activated"] is False and "by hand" in incomparable["reason"]


def test_gate_scores_the_active_version_on_the_new_test_split(
    tiny_dataset: Path, settings: Settings
) -> None:
    dataset = discover(tiny_dataset)
    registry = LocalRegistry(settings.models_dir)
    params = TrainingParams(dataset="tiny", **TINY)  # type: ignore[arg-type]
    # A version trained on a few dozen images is no better than chance on its six test
    # images: the gate keeps even the first one a candidate.
    refusing = settings.model_copy(update={"promotion_refuse_chance": True})
    first = train_and_publish(dataset, params, refusing, Recorder())
    manifest = registry.manifest(first)
    assert manifest["reliability"]["better_than_chance"] is False
    assert chance_reason(ReliabilityRecord.model_validate(manifest["reliability"]))
    assert manifest["promotion"]["activated"] is False
    assert "includes chance" in manifest["promotion"]["reason"] and registry.active() is None
    registry.activate(first)  # by hand, it still is
    second = train_and_publish(dataset, params.model_copy(update={"seed": 8, "activate": "never"}),
                               settings, Recorder())
    assert registry.active().version == first  # type: ignore[union-attr]
    assert registry.manifest(second)["promotion"]["activated"] is False

    third = train_and_publish(dataset, params.model_copy(update={"seed": 9}), settings,
                              Recorder())
    promotion = registry.manifest(third)["promotion"]
    assert promotion["mode"] == "if_better" and promotion["active_version"] == first
    assert promotion["new"] is not None and promotion["active"] is not None
    expected = promotion["new"] + promotion["margin"] >= promotion["active"]
    assert promotion["activated"] is expected
    assert registry.active().version == (third if expected else first)  # type: ignore[union-attr]
