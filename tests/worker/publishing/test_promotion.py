"""The promotion decision: a worse version waits as a candidate, a better one becomes
active."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.datasets import discover
from shared.manifest import SplitMetrics
from shared.ml.reliability import ReliabilityRecord
from shared.registry import ActivePointer
from shared.registry.local import LocalRegistry
from tests.helpers.versions import publish_random
from worker.data.pipeline import Split
from worker.publishing.promotion import (
    Challenger,
    PromotionRule,
    chance_reason,
    decide,
    decide_promotion,
)

ACTIVE = ActivePointer("20260101-000000-aaaaaa", 3)
CLASSES = ("COVID", "Normal", "Viral Pneumonia")


@pytest.mark.parametrize(("new", "old", "activated"), [
    (0.80, 0.90, False),   # worse by more than the margin: candidate
    (0.895, 0.90, True),   # worse, but within the margin
    (0.95, 0.90, True),    # better
])
def test_if_better_compares_within_the_margin(new: float, old: float, activated: bool) -> None:
    decision = decide("if_better", "balanced_accuracy", 0.01, new, ACTIVE, old)
    assert decision.activated is activated
    assert decision.active_version == ACTIVE.version
    assert ("candidate" in decision.reason) is not activated


def test_a_version_no_better_than_chance_is_never_promoted() -> None:
    chance = "the test balanced accuracy interval [0.2, 0.6] includes chance (0.333)"
    first = decide("if_better", "accuracy", 0.0, 0.5, None, None, chance=chance)
    assert first.activated is False and "includes chance" in first.reason
    better = decide("if_better", "accuracy", 0.0, 0.99, ACTIVE, 0.1, chance=chance)
    assert better.activated is False and "candidate" in better.reason
    # asked for explicitly, it is activated (its answers say it is no better than chance)
    assert decide("always", "accuracy", 0.0, 0.5, None, None, chance=chance).activated


def test_explicit_modes_and_first_version() -> None:
    assert decide("always", "accuracy", 0.0, 0.1, ACTIVE, 0.9).activated is True
    assert decide("never", "accuracy", 0.0, 0.99, ACTIVE, 0.1).activated is False
    assert decide("if_better", "accuracy", 0.0, 0.1, None, None).activated is True
    incomparable = decide("if_better", "accuracy", 0.0, 0.9, ACTIVE, None, comparable=False)
    assert incomparable.activated is False and "by hand" in incomparable.reason


def test_a_chance_reason_quotes_the_interval() -> None:
    record = ReliabilityRecord(confidence_threshold=0.5, confidence_coverage=0.95,
                               chance=1 / 3, balanced_accuracy_ci=[0.2, 0.6],
                               better_than_chance=False)
    assert chance_reason(record) == ("the test balanced accuracy interval [0.200, 0.600] "
                                     "includes chance (0.333)")
    above = record.model_copy(update={"balanced_accuracy_ci": [0.5, 0.9],
                                      "better_than_chance": True})
    assert chance_reason(above) is None


def _test_split(tiny_dataset: Path) -> Split:
    dataset = discover(tiny_dataset)
    paths = [p for label in dataset.classes for p in dataset.files[label][:3]]
    return Split(paths, np.repeat(np.arange(3), 3))


def test_the_decision_scores_the_active_version_on_the_new_test_split(
        tiny_dataset: Path, tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    test = _test_split(tiny_dataset)
    active = publish_random(registry, seed=1, classes=CLASSES, activate=True)
    # a version that is always right beats any active one; one always wrong loses
    best = decide_promotion(registry, PromotionRule("if_better", "accuracy", 0.0), Challenger(
        test, list(CLASSES), SplitMetrics(images=9, accuracy=1.0)), 10**8)
    assert best.activated and best.active_version == active
    assert best.active is not None and 0.0 <= best.active <= 1.0 and best.new == 1.0
    worst = decide_promotion(registry, PromotionRule("if_better", "accuracy", 0.0), Challenger(
        test, list(CLASSES), SplitMetrics(images=9, accuracy=0.0)), 10**8)
    assert worst.active == best.active  # the same active version on the same split
    assert worst.activated is (best.active == 0.0) and "candidate" in worst.reason
    # within the margin of it, a version is not worse
    close = decide_promotion(registry, PromotionRule("if_better", "accuracy", 0.05), Challenger(
        test, list(CLASSES), SplitMetrics(images=9, accuracy=best.active - 0.04)), 10**8)
    assert close.activated and "margin 0.05" in close.reason


def test_an_active_version_of_other_classes_is_not_compared(
        tiny_dataset: Path, tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    publish_random(registry, seed=1, classes=("a", "b"), activate=True)
    decision = decide_promotion(registry, PromotionRule("if_better", "accuracy", 0.0), Challenger(
        _test_split(tiny_dataset), list(CLASSES), SplitMetrics(images=9, accuracy=1.0)), 10**8)
    assert not decision.activated and "by hand" in decision.reason
    assert decision.active is None


def test_a_chance_level_version_is_kept_without_scoring_the_active_one(
        tiny_dataset: Path, tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    publish_random(registry, seed=1, classes=CLASSES, activate=True)
    decision = decide_promotion(registry, PromotionRule("if_better", "accuracy", 0.0), Challenger(
        _test_split(tiny_dataset), list(CLASSES), SplitMetrics(images=9, accuracy=1.0),
        chance="no better than chance"), 10**8)
    assert not decision.activated and decision.active is None
    assert decision.reason == "no better than chance; kept as a candidate"
