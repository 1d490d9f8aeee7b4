"""Whether serving a version needs a confirmation: the warning, and the refusal without
force."""

from __future__ import annotations

import pytest

from shared.activation import activation_warning, chance_reason, check_activation
from shared.errors import ConfirmationRequired
from shared.manifest import Manifest, Metrics, SplitMetrics
from shared.ml.reliability import ReliabilityRecord
from tests.helpers.versions import draft

AT_CHANCE = ("the test balanced accuracy interval [0.200, 0.600] includes chance (0.333)")


def _manifest(interval: list[float] | None) -> Manifest:
    metrics = Metrics(test=SplitMetrics(images=30, balanced_accuracy_ci=interval)) \
        if interval else Metrics()
    return draft(metrics=metrics).seal("20260101-000000-abcdef", {}, "0" * 64)


def test_a_chance_reason_quotes_the_interval() -> None:
    record = ReliabilityRecord(confidence_threshold=0.5, confidence_coverage=0.95,
                               chance=1 / 3, balanced_accuracy_ci=[0.2, 0.6],
                               better_than_chance=False)
    assert chance_reason(record) == AT_CHANCE
    above = record.model_copy(update={"balanced_accuracy_ci": [0.5, 0.9],
                                      "better_than_chance": True})
    assert chance_reason(above) is None


def test_only_a_version_proven_better_than_chance_needs_no_confirmation() -> None:
    assert activation_warning(_manifest([0.5, 0.9])) is None
    assert activation_warning(_manifest([0.2, 0.6])) == AT_CHANCE
    assert "no test balanced accuracy interval" in str(activation_warning(_manifest(None)))


def test_without_force_an_unproven_version_is_refused_and_forced_its_warning_returned() -> None:
    unproven = _manifest([0.2, 0.6])
    with pytest.raises(ConfirmationRequired) as refused:
        check_activation(unproven, force=False)
    assert refused.value.code == "confirmation_required"
    assert AT_CHANCE in refused.value.message and "force" in refused.value.message
    assert check_activation(unproven, force=True) == AT_CHANCE
    assert check_activation(_manifest([0.5, 0.9]), force=False) is None
