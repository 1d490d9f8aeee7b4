"""A version's live figures: how its answers in service fared once the reading room labelled
them. Counts with Wilson intervals, because the labelled answers are few at first and a bare
share of five would read as certain."""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import binomtest

from shared.monitoring.figures import LiveFigures, Proportion
from shared.monitoring.records import LoggedPrediction

CONFIDENCE = 0.95


def proportion(hits: int, total: int) -> Proportion:
    """``hits`` of ``total`` with its 95% Wilson interval; no value or interval while total
    is 0."""
    if total == 0:
        return Proportion(hits=hits, total=0)
    interval = binomtest(hits, total).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Proportion(hits=hits, total=total, value=hits / total,
                      low=float(interval.low), high=float(interval.high))


def live_figures(records: Sequence[LoggedPrediction], answers: int,
                 classes: Sequence[str] | None = None) -> LiveFigures:
    """One version's figures from its labelled ``records`` (unlabelled ones are skipped);
    ``answers`` is how many answers it gave in all. Recall is listed for every class of
    ``classes`` (zero totals where none was confirmed) and for any other confirmed class."""
    labelled = [r for r in records if r.confirmed is not None]
    confirmed = [r.confirmed.label for r in labelled if r.confirmed is not None]
    names = list(classes or []) + sorted(set(confirmed) - set(classes or []))
    per_class = {
        name: proportion(sum(1 for r in labelled if r.right and r.label == name),
                         confirmed.count(name))
        for name in names}
    reliable = [r for r in labelled if r.reliable]
    return LiveFigures(
        answers=answers, labelled=len(labelled),
        accuracy=proportion(sum(1 for r in labelled if r.right), len(labelled)),
        per_class=per_class,
        reliable_right=proportion(sum(1 for r in reliable if r.right), len(reliable)),
        reliable_rate=proportion(len(reliable), len(labelled)))


def live_by_version(records: Sequence[LoggedPrediction]) -> dict[str, list[LoggedPrediction]]:
    """The records grouped by the version that answered, in the order first met."""
    groups: dict[str, list[LoggedPrediction]] = {}
    for record in records:
        groups.setdefault(record.version, []).append(record)
    return groups
