"""The shadow report from hand-made records: agreement, the matrix, each side's answers and,
only where images were labelled, the paired comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.monitoring.figures import ShadowReport
from shared.monitoring.records import (
    ConfirmedLabel,
    LoggedPrediction,
    ShadowAnswer,
    ShadowCounts,
)
from shared.monitoring.shadow_report import shadow_report

START = datetime(2026, 1, 1, tzinfo=UTC)
COUNTS = ShadowCounts(seen=7, dropped=2, failed=1, last_error="out of memory")


def logged(n: int, version: str, label: str, shadow: str | None, *, confirmed: str | None = None,
           shadow_version: str = "cand", reliable: bool = True, shifted: bool | None = None,
           shadow_reliable: bool = True, shadow_shifted: bool | None = None) -> LoggedPrediction:
    return LoggedPrediction(
        prediction_id=f"p{n}", time=START + timedelta(minutes=n), version=version, label=label,
        probabilities={label: 0.9}, reliable=reliable, shifted=shifted, image_sha256="0" * 64,
        source="page",
        confirmed=None if confirmed is None else ConfirmedLabel(
            label=confirmed, by="reading-room", role="labeler", at=START),
        shadow=None if shadow is None else ShadowAnswer(
            version=shadow_version, label=shadow, probabilities={shadow: 0.8},
            reliable=shadow_reliable, shifted=shadow_shifted))


# The active version changed from v1 to v2 during the shadow; newest first, as the log lists.
RECORDS = [
    logged(6, "v2", "Normal", None),  # not scored by the shadow
    logged(5, "v2", "COVID", "COVID", shadow_version="other"),  # another shadow's
    logged(4, "v2", "Normal", "Normal", confirmed="Normal", shifted=False),
    logged(3, "v2", "COVID", "Normal", confirmed="Normal", reliable=False, shadow_shifted=True),
    logged(2, "v1", "Normal", "Viral Pneumonia", shifted=True, shadow_shifted=False),
    logged(1, "v1", "COVID", "COVID", confirmed="COVID", shadow_reliable=False),
    logged(0, "v1", "COVID", "COVID", confirmed="Normal"),
]


def report(records: list[LoggedPrediction]) -> ShadowReport:
    return shadow_report("cand", records, COUNTS, current=True, loaded=False,
                         load_error="no such file")


def test_the_report_compares_both_sides_on_the_same_images() -> None:
    result = report(RECORDS)
    assert (result.version, result.current, result.loaded, result.load_error) == (
        "cand", True, False, "no such file")
    assert (result.seen, result.dropped, result.failed, result.last_error) == (
        7, 2, 1, "out of memory")
    assert result.images == 5
    assert result.agreement == pytest.approx(3 / 5)
    classes = ["COVID", "Normal", "Viral Pneumonia"]
    assert list(result.matrix) == classes
    assert result.matrix == {
        "COVID": {"COVID": 2, "Normal": 1, "Viral Pneumonia": 0},
        "Normal": {"COVID": 0, "Normal": 1, "Viral Pneumonia": 1},
        "Viral Pneumonia": {"COVID": 0, "Normal": 0, "Viral Pneumonia": 0}}
    active, shadow = result.active, result.shadow
    assert active is not None and shadow is not None
    assert active.versions == ["v1", "v2"]  # in the order they served
    assert shadow.versions == ["cand"]
    assert active.labels == {"COVID": 3, "Normal": 2, "Viral Pneumonia": 0}
    assert shadow.labels == {"COVID": 2, "Normal": 2, "Viral Pneumonia": 1}
    assert active.reliable_rate == pytest.approx(4 / 5)
    assert shadow.reliable_rate == pytest.approx(4 / 5)
    assert active.shifted_rate == pytest.approx(1 / 2)  # over the two with a flag
    assert shadow.shifted_rate == pytest.approx(1 / 2)


def test_labelled_images_give_each_side_accuracy_and_the_paired_comparison() -> None:
    result = report(RECORDS)
    assert result.labelled == 4
    active, shadow = result.active, result.shadow
    assert active is not None and shadow is not None
    assert active.accuracy is not None and shadow.accuracy is not None
    assert (active.accuracy.hits, active.accuracy.total) == (2, 4)  # p4, p1
    assert (shadow.accuracy.hits, shadow.accuracy.total) == (3, 4)  # p4, p3, p1
    for p in (active.accuracy, shadow.accuracy):
        assert p.value is not None and p.low is not None and p.high is not None
        assert 0.0 <= p.low <= p.value <= p.high <= 1.0
    paired = result.paired
    assert paired is not None
    assert (paired.images, paired.first, paired.second) == (4, "cand", "active")
    assert (paired.only_first_right, paired.only_second_right) == (1, 0)  # p3
    # balanced accuracy: shadow COVID 1/1, Normal 2/3; active COVID 1/1, Normal 1/3
    assert paired.first_balanced_accuracy == pytest.approx((1 + 2 / 3) / 2)
    assert paired.second_balanced_accuracy == pytest.approx((1 + 1 / 3) / 2)
    assert paired.difference_ci is not None
    assert paired.difference_ci[0] <= paired.difference <= paired.difference_ci[1]


def test_without_labels_there_is_no_paired_comparison() -> None:
    unlabelled = [r.model_copy(update={"confirmed": None}) for r in RECORDS]
    result = report(unlabelled)
    assert (result.images, result.labelled, result.paired) == (5, 0, None)
    assert result.active is not None and result.active.accuracy is not None
    assert (result.active.accuracy.total, result.active.accuracy.value) == (0, None)


def test_a_shadow_without_images_reports_its_counters_only() -> None:
    result = report(RECORDS[:2])  # none scored by "cand"
    assert (result.images, result.agreement, result.matrix) == (0, None, {})
    assert (result.active, result.shadow, result.labelled, result.paired) == (None, None, 0, None)
    assert (result.seen, result.dropped) == (7, 2)
    assert report([]).images == 0
