"""The model card's account of when an answer may be read: the gate (and what it refused of
the version's own radiographs), the confidence threshold, the interval against chance, and
how the answers marked reliable did, overall and per class."""

from __future__ import annotations

from shared.manifest import GateRecord
from shared.ml.reliability import ReliabilityRecord, ReliableSubset
from worker.publishing.card_text import fmt, table

SPLIT_ORDER = ("train", "validation", "test")
# Why the two columns of the risk-coverage table differ, for a reader who expects one number.
ACCURACY_NOTE = (
    "Accuracy counts images; balanced accuracy averages the classes' recalls. The two differ "
    "when the answers kept are unevenly spread over the classes.")


def _gate_refusals(gate: GateRecord) -> str:
    """What the gate refused of the version's own radiographs, per split; empty when not
    recorded (versions published before it was)."""
    refusals = gate.refusals
    if not refusals:
        return ""
    names = [n for n in SPLIT_ORDER if n in refusals] + \
        [n for n in refusals if n not in SPLIT_ORDER]
    counts = ", ".join(f"{refusals[n].refused} of {refusals[n].images} in {n}" for n in names)
    return f" Of this version's own radiographs it refused {counts}."


def _gate_line(gate: GateRecord) -> str:
    if not gate.method:
        return (f"- **This version has no chest-radiograph gate** ({gate.reason}): it "
                "gives any image a diagnosis.")
    return (f"- An image the chest-radiograph gate refuses gets no diagnosis (threshold "
            f"{fmt(gate.threshold)}; {gate.method}).{_gate_refusals(gate)}")


def _share(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.0%})" if whole else str(part)


def _per_class(test: ReliableSubset) -> list[str]:
    # Empty for versions published before the figures were recorded.
    if not test.per_class:
        return []
    rows = [[label, str(c.images), _share(c.reliable, c.images), fmt(c.recall),
             fmt(c.reliable_recall)] for label, c in test.per_class.items()]
    return ["Per class on the test split (recall: the share of the class's images answered "
            "with that class):", "",
            *table(["class", "images", "marked reliable", "recall, all answers",
                    "recall, reliable answers"], rows), ""]


def reliability_section(record: ReliabilityRecord | None,
                        gate: GateRecord | None) -> list[str]:
    """The section, or nothing for a version published without a reliability record."""
    if record is None:
        return []
    gate = gate or GateRecord()
    low, high = record.balanced_accuracy_ci or (None, None)
    test = record.test or ReliableSubset(images=0, coverage=0.0)
    verdict = ("lies above chance" if record.better_than_chance else
               "**includes chance: every answer of this version is marked unreliable, and the "
               "promotion decision does not activate it**")
    lines = [
        "### When an answer is not a finding", "",
        _gate_line(gate),
        f"- An answer whose top probability is below {fmt(record.confidence_threshold)} "
        f"is marked `low_confidence` (the threshold keeps "
        f"{fmt(record.confidence_coverage, 2)} of the validation answers).",
        f"- The test balanced accuracy interval [{fmt(low)}, {fmt(high)}] "
        f"against chance {fmt(record.chance)} {verdict}.",
        f"- On the test split, {fmt(test.coverage)} of the answers are marked "
        f"reliable; their balanced accuracy is {fmt(test.balanced_accuracy)} "
        f"(all answers: {fmt(test.balanced_accuracy_all)}).", "",
        *_per_class(test),
    ]
    if test.risk_coverage:
        lines += ["Risk-coverage on the test split (most confident answers kept first). "
                  + ACCURACY_NOTE, "",
                  *table(["coverage", "accuracy", "balanced accuracy"],
                          [[fmt(p.coverage, 1), fmt(p.accuracy), fmt(p.balanced_accuracy)]
                           for p in test.risk_coverage]), ""]
    return lines
