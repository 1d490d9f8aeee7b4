"""The promotion decision: a worse version waits as a candidate, a better one becomes
active."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.datasets import discover
from shared.manifest import PairedComparison, SplitMetrics
from shared.registry import ActivePointer
from shared.registry.local import LocalRegistry
from tests.helpers.versions import publish_random
from worker.data.pipeline import Split
from worker.publishing.promotion import (
    PARENT_TEST,
    SITE,
    Challenger,
    PromotionRule,
    decide,
    decide_fine_tune,
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
    first = decide("if_better", "accuracy", 0.0, 0.1, None, None)
    # printed after "activated:", the reason says why it was, not why it was not
    assert first.activated is True
    assert first.reason == "it is the first version, with no active version to compare it with"
    incomparable = decide("if_better", "accuracy", 0.0, 0.9, ACTIVE, None, comparable=False)
    assert incomparable.activated is False and "by hand" in incomparable.reason


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


def _paired(low: float, high: float, images: int = 60) -> PairedComparison:
    return PairedComparison(images=images, first="this version", second="parent",
                            first_balanced_accuracy=0.8, second_balanced_accuracy=0.7,
                            difference=(low + high) / 2, difference_ci=[low, high])


@pytest.mark.parametrize(("site", "parent", "activated", "why"), [
    ((0.05, 0.20), (-0.01, 0.02), True, "not worse on the parent's"),
    ((-0.02, 0.20), (-0.01, 0.02), False, "not shown better on the site"),
    ((0.05, 0.20), (-0.05, 0.01), False, "worse than the parent by more than 0.02"),
    ((0.05, 0.20), None, False, "not compared on the parent's own films"),
])
def test_a_fine_tune_is_judged_against_its_parent_on_the_same_images(
        site: tuple[float, float], parent: tuple[float, float] | None, activated: bool,
        why: str) -> None:
    decision = decide_fine_tune("if_better", 0.02, _paired(*site),
                                _paired(*parent) if parent else None,
                                parent_data="its datasets are gone")
    assert decision.activated is activated
    assert why in decision.reason
    assert decision.paired is not None and decision.paired[SITE].difference_ci == list(site)
    assert (PARENT_TEST in decision.paired) is (parent is not None)
    # the interval is in the reason, as the card and the job show it
    assert f"{site[0]:+.3f} to {site[1]:+.3f}" in decision.reason


def test_a_fine_tune_no_better_than_chance_or_asked_never_stays_a_candidate() -> None:
    good = _paired(0.05, 0.2)
    assert not decide_fine_tune("if_better", 0.02, good, good, chance="at chance").activated
    assert not decide_fine_tune("never", 0.02, good, good).activated
    assert decide_fine_tune("always", 0.02, _paired(-0.3, -0.1), None).activated
