"""A shadow version against the active one, on the live images both scored: how often they
agree, how each answered, and on the labelled images which was right more often, paired
because both judged the same films."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from shared.manifest import PairedComparison
from shared.monitoring.figures import ShadowReport, ShadowSide
from shared.monitoring.live import proportion
from shared.monitoring.records import LoggedPrediction, ShadowAnswer, ShadowCounts
from shared.paired import paired_comparison

# The active side's name in the paired comparison: it may span several versions when the
# active one changed while the shadow ran.
ACTIVE = "active"

Answer = LoggedPrediction | ShadowAnswer


def shadow_report(version: str, records: Sequence[LoggedPrediction], counts: ShadowCounts, *,
                  current: bool, loaded: bool, load_error: str | None,
                  seed: int = 0) -> ShadowReport:
    """The report of shadow ``version`` from the records it scored (others are skipped) and
    its counters across replicas."""
    report = ShadowReport(
        version=version, current=current, loaded=loaded, load_error=load_error,
        seen=counts.seen, dropped=counts.dropped, failed=counts.failed,
        last_error=counts.last_error)
    # Oldest first, so the active side lists its versions in the order they served.
    scored = sorted((r for r in records if r.shadow is not None and r.shadow.version == version),
                    key=lambda r: r.time)
    if not scored:
        return report
    shadows = [r.shadow for r in scored if r.shadow is not None]
    classes = sorted({r.label for r in scored} | {s.label for s in shadows})
    matrix = {active: dict.fromkeys(classes, 0) for active in classes}
    for record, answer in zip(scored, shadows, strict=True):
        matrix[record.label][answer.label] += 1
    truth = [r.confirmed.label if r.confirmed is not None else None for r in scored]
    report.images = len(scored)
    report.agreement = sum(matrix[c][c] for c in classes) / len(scored)
    report.matrix = matrix
    report.active = _side([r.version for r in scored], scored, truth, classes)
    report.shadow = _side([version], shadows, truth, classes)
    report.labelled = sum(1 for t in truth if t is not None)
    if report.labelled:
        report.paired = _paired(version, scored, shadows, truth, classes, seed)
    return report


def _side(versions: list[str], answers: Sequence[Answer], truth: list[str | None],
          classes: list[str]) -> ShadowSide:
    """One side's answers, ``truth`` the confirmed label of each image (None: unlabelled)."""
    tally = Counter(a.label for a in answers)
    shifted = [a.shifted for a in answers if a.shifted is not None]
    labelled = [(a, t) for a, t in zip(answers, truth, strict=True) if t is not None]
    return ShadowSide(
        versions=list(dict.fromkeys(versions)),
        labels={c: tally[c] for c in classes},
        reliable_rate=sum(1 for a in answers if a.reliable) / len(answers),
        shifted_rate=sum(shifted) / len(shifted) if shifted else None,
        accuracy=proportion(sum(1 for a, t in labelled if a.label == t), len(labelled)))


def _paired(version: str, scored: list[LoggedPrediction], shadows: list[ShadowAnswer],
            truth: list[str | None], classes: list[str], seed: int) -> PairedComparison:
    """The shadow (first) against the active answers (second) on the labelled images."""
    names = sorted(set(classes) | {t for t in truth if t is not None})
    index = {name: i for i, name in enumerate(names)}
    rows = [(index[t], index[s.label], index[r.label])
            for r, s, t in zip(scored, shadows, truth, strict=True) if t is not None]
    labels, shadow, active = (np.array(column) for column in zip(*rows, strict=True))
    return paired_comparison(labels, shadow, active, names=(version, ACTIVE), seed=seed)
