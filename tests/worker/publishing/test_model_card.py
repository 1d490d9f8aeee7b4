"""The model card: names that come from a dataset cannot break its tables; the preprocessing,
calibration, reliable answers, gate and promotion are told in words a reader can take in."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.manifest import (
    Calibration,
    ClassRates,
    ConfusionMatrix,
    GateCount,
    GateRecord,
    Metrics,
    Promotion,
    SplitMetrics,
)
from shared.ml.reliability import (
    ReliabilityRecord,
    ReliableClass,
    ReliableSubset,
    RiskCoveragePoint,
)
from tests.helpers.versions import draft
from worker.publishing.model_card import card_html, card_markdown


def test_class_names_with_pipes_and_newlines_stay_in_their_cells() -> None:
    classes = ("Covid|19", "Viral\nPneumonia", "Normal\\")
    rates = {label: ClassRates(support=3, sensitivity=0.5) for label in classes}
    test = SplitMetrics(images=9, accuracy=0.5, per_class=rates,
                        confusion_matrix=ConfusionMatrix(labels=list(classes),
                                                         counts=[[1, 1, 1]] * 3))
    markdown = card_markdown("v1", draft(classes=classes, metrics=Metrics(test=test)))
    html = card_html(markdown, "v1")
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in rows}
        assert len(widths) == 1, table  # every row as wide as the header
    assert "<td>Covid|19</td>" in html and "<td>Viral Pneumonia</td>" in html
    assert "<td>Normal\\</td>" in html


def _card(**parts: Any) -> str:
    return card_markdown("v1", draft(classes=("COVID", "Normal"), **parts))


def test_the_preprocessing_is_told_in_words_not_as_a_dict() -> None:
    options = {"equalize": "clahe", "crop_border": 0.05, "clahe_clip_limit": 0.01,
               "reduce_large": True}
    card = _card(preprocessing="gray3-bilinear-vgg16caffe-v1+reduce3+crop0.05+clahe0.01",
                 preprocessing_options=options)
    assert "{" not in card and "'equalize'" not in card
    assert "| border crop | 5% of the height and of the width removed from each side |" in card
    assert "| contrast | CLAHE (adaptive histogram equalization), clip limit 0.01 |" in card
    assert "| large images | decoded at reduced size (at least 3 times the input) |" in card
    plain = _card(preprocessing_options={"equalize": "none", "crop_border": 0.0})
    assert "| border crop | none |" in plain and "| contrast | none |" in plain


@pytest.mark.parametrize(("calibration", "words"), [
    (Calibration(temperature=1.0, ece_before=0.0991, ece_after=0.0989),
     "0.099 before and after temperature scaling (T=1.00: calibration changed nothing)"),
    (Calibration(temperature=1.4, ece_before=0.0991, ece_after=0.0988),
     "0.099 before and after temperature scaling (T=1.40: the change is below the rounding)"),
    (Calibration(temperature=1.4, ece_before=0.12, ece_after=0.05),
     "0.120 before temperature scaling, 0.050 after (T=1.40)"),
])
def test_an_ece_the_calibration_did_not_change_is_said_so(calibration: Calibration,
                                                         words: str) -> None:
    card = _card(calibration=calibration, metrics=Metrics(test=SplitMetrics(images=9)))
    assert f"| ECE, 15 bins (lower is better) | {words} |" in card
    assert f"ECE on the test split: {words}." in card
    assert "→" not in card


def _reliability(**test: Any) -> ReliabilityRecord:
    return ReliabilityRecord(
        confidence_threshold=0.6, confidence_coverage=0.9, chance=0.5,
        balanced_accuracy_ci=[0.6, 0.8], better_than_chance=True,
        test=ReliableSubset(images=40, coverage=0.75, **test))


def test_risk_coverage_says_why_accuracy_and_balanced_accuracy_differ() -> None:
    record = _reliability(risk_coverage=[
        RiskCoveragePoint(coverage=0.5, accuracy=0.9, balanced_accuracy=0.7)])
    card = _card(reliability=record)
    assert "| 0.5 | 0.900 | 0.700 |" in card
    assert ("Accuracy counts images; balanced accuracy averages the classes' recalls. The two "
            "differ when the answers kept are unevenly spread over the classes.") in card


def test_the_reliable_answers_are_shown_per_class() -> None:
    record = _reliability(per_class={
        "COVID": ReliableClass(images=20, reliable=5, recall=0.4, reliable_recall=0.8),
        "Normal": ReliableClass(images=20, reliable=0, recall=0.9, reliable_recall=None)})
    card = _card(reliability=record)
    assert "| COVID | 20 | 5 (25%) | 0.400 | 0.800 |" in card
    assert "| Normal | 20 | 0 (0%) | 0.900 | n/a |" in card
    assert "recall, reliable answers" not in _card(reliability=_reliability())


def test_the_gate_line_gives_its_refusals_per_split() -> None:
    gate = GateRecord(method="mahalanobis", threshold=3.2, refusals={
        "test": GateCount(refused=0, images=30), "train": GateCount(refused=2, images=120),
        "validation": GateCount(refused=1, images=30)})
    card = _card(reliability=_reliability(), chest_xray_gate=gate)
    assert ("gets no diagnosis (threshold 3.200; mahalanobis). Of this version's own "
            "radiographs it refused 2 of 120 in train, 1 of 30 in validation, 0 of 30 in "
            "test.") in card
    unrecorded = _card(reliability=_reliability(), chest_xray_gate=GateRecord(
        method="mahalanobis", threshold=3.2))
    assert "mahalanobis)." in unrecorded and "it refused" not in unrecorded


def test_the_promotion_reads_as_what_happened() -> None:
    first = Promotion(mode="if_better", metric="balanced_accuracy", margin=0.01,
                      activated=True, reason="it is the first version, with no active "
                      "version to compare it with")
    assert ("- at publication: activated (it is the first version, with no active version "
            "to compare it with)") in _card(promotion=first)
