"""Live figures from hand-made labelled records, checked against counts made by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.monitoring.live import live_by_version, live_figures, proportion
from shared.monitoring.records import ConfirmedLabel, LoggedPrediction

START = datetime(2026, 1, 1, tzinfo=UTC)
CLASSES = ("COVID", "Normal", "Viral Pneumonia")


def logged(n: int, version: str, label: str, confirmed: str | None,
           reliable: bool = True) -> LoggedPrediction:
    return LoggedPrediction(
        prediction_id=f"p{n}", time=START + timedelta(minutes=n), version=version, label=label,
        probabilities={label: 0.9}, reliable=reliable, image_sha256="0" * 64, source="api",
        confirmed=None if confirmed is None else ConfirmedLabel(
            label=confirmed, by="reading-room", role="labeler", at=START))


# (answer, confirmed, reliable): COVID confirmed 3 times, called right twice; Normal confirmed
# twice, right once; 4 of 5 right among the reliable ones.
RECORDS = [
    logged(0, "v1", "COVID", "COVID"),
    logged(1, "v1", "COVID", "COVID"),
    logged(2, "v1", "Normal", "COVID", reliable=False),
    logged(3, "v1", "Normal", "Normal"),
    logged(4, "v1", "COVID", "Normal"),
    logged(5, "v1", "Normal", None),  # not labelled: skipped
]


def assert_sound(p_value: float | None, low: float | None, high: float | None) -> None:
    assert p_value is not None and low is not None and high is not None
    assert 0.0 <= low <= p_value <= high <= 1.0


def test_a_proportion_has_a_wilson_interval_around_its_value() -> None:
    p = proportion(3, 10)
    assert (p.hits, p.total, p.value) == (3, 10, pytest.approx(0.3))
    assert_sound(p.value, p.low, p.high)
    # Wilson for 3/10 at 95%, by hand: (0.3 + z²/20 ± z·sqrt(0.021 + z²/400)) / (1 + z²/10)
    assert (p.low, p.high) == (pytest.approx(0.1078, abs=1e-4), pytest.approx(0.6032, abs=1e-4))
    for hits, total in ((0, 4), (4, 4)):  # the interval stays within [0, 1] at the edges
        edge = proportion(hits, total)
        assert_sound(edge.value, edge.low, edge.high)
        assert edge.low < edge.high


def test_no_total_gives_no_value_and_no_interval() -> None:
    empty = proportion(0, 0)
    assert (empty.total, empty.value, empty.low, empty.high) == (0, None, None, None)


def test_live_figures_count_accuracy_recall_and_reliability() -> None:
    figures = live_figures(RECORDS, answers=9, classes=CLASSES)
    assert (figures.answers, figures.labelled) == (9, 5)
    assert (figures.accuracy.hits, figures.accuracy.total) == (3, 5)
    assert_sound(figures.accuracy.value, figures.accuracy.low, figures.accuracy.high)
    recall = {name: (p.hits, p.total) for name, p in figures.per_class.items()}
    assert recall == {"COVID": (2, 3), "Normal": (1, 2), "Viral Pneumonia": (0, 0)}
    assert list(figures.per_class) == list(CLASSES)
    assert figures.per_class["Viral Pneumonia"].value is None
    assert (figures.reliable_right.hits, figures.reliable_right.total) == (3, 4)
    assert (figures.reliable_rate.hits, figures.reliable_rate.total) == (4, 5)
    for p in (figures.reliable_right, figures.reliable_rate, figures.per_class["COVID"]):
        assert_sound(p.value, p.low, p.high)


def test_without_classes_recall_lists_the_confirmed_ones() -> None:
    assert list(live_figures(RECORDS, answers=6).per_class) == ["COVID", "Normal"]


def test_no_labelled_answers_give_zero_totals() -> None:
    figures = live_figures([logged(0, "v1", "COVID", None)], answers=1, classes=CLASSES)
    assert (figures.labelled, figures.accuracy.total, figures.accuracy.value) == (0, 0, None)
    assert all(p.total == 0 for p in figures.per_class.values())
    assert figures.reliable_right.total == figures.reliable_rate.total == 0


def test_records_group_by_version_in_the_order_met() -> None:
    records = [logged(0, "v2", "COVID", "COVID"), *RECORDS[:2], logged(9, "v2", "Normal", None)]
    groups = live_by_version(records)
    assert list(groups) == ["v2", "v1"]
    assert [r.prediction_id for r in groups["v2"]] == ["p0", "p9"]
    assert [r.prediction_id for r in groups["v1"]] == ["p0", "p1"]
