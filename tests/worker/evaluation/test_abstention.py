"""Abstention: the confidence threshold keeps its coverage, the chance check, risk-coverage,
and the reasons an answer is not a finding."""

from __future__ import annotations

import numpy as np

from shared.ml.reliability import ReliabilityRecord, reasons
from worker.evaluation.abstention import (
    balanced_accuracy_interval,
    confidence_threshold,
    fit_reliability,
    reliable_subset,
    risk_coverage,
)

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


def _record(threshold: float | None = 0.6, better: bool = True) -> ReliabilityRecord:
    return ReliabilityRecord(confidence_threshold=threshold, confidence_coverage=0.95,
                             chance=1 / 3, balanced_accuracy_ci=[0.5, 0.7],
                             better_than_chance=better)


def test_reasons_for_a_shifted_a_low_confidence_and_a_chance_level_case() -> None:
    assert reasons(0.9, shifted=False, record=_record()) == []
    assert reasons(0.9, shifted=True, record=_record()) == ["shifted"]
    assert reasons(0.5, shifted=False, record=_record()) == ["low_confidence"]
    assert reasons(0.9, shifted=False, record=_record(better=False)) == [
        "version_not_better_than_chance"]
    assert reasons(0.4, shifted=True, record=_record(better=False)) == [
        "shifted", "low_confidence", "version_not_better_than_chance"]
    assert reasons(0.2, shifted=False, record=None) == []  # an older version: nothing known


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_threshold_keeps_the_stated_share_of_fresh_answers() -> None:
    rng = np.random.default_rng(0)
    validation = _softmax(rng.normal(0, 2, (4000, 3)))
    fresh = _softmax(rng.normal(0, 2, (20000, 3)))
    threshold = confidence_threshold(validation, 0.9)
    assert threshold is not None
    kept = float((fresh.max(axis=1) >= threshold).mean())
    assert abs(kept - 0.9) < 0.02
    assert confidence_threshold(np.zeros((0, 3)), 0.9) is None


def test_chance_is_inside_the_interval_of_a_guess_and_outside_that_of_a_good_model() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    guess = balanced_accuracy_interval(labels, rng.integers(0, 3, 300))
    assert guess is not None and guess[0] < 1 / 3 < guess[1]
    good = labels.copy()
    good[:30] = (good[:30] + 1) % 3  # 90% right
    interval = balanced_accuracy_interval(labels, good)
    assert interval is not None and 1 / 3 < interval[0] < 0.9 < interval[1]
    assert balanced_accuracy_interval(labels[:0], good[:0]) is None


def test_confident_answers_are_more_often_right_and_the_record_says_so() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 600)
    # right answers confident, wrong ones not: risk falls as coverage shrinks
    logits = rng.normal(0, 0.3, (600, 3))
    right = rng.random(600) < 0.7
    logits[np.arange(600), np.where(right, labels, (labels + 1) % 3)] += np.where(right, 3, 0.5)
    probabilities = _softmax(logits)
    curve = risk_coverage(labels, probabilities)
    assert [p.coverage for p in curve] == [round(0.1 * k, 1) for k in range(1, 11)]
    assert curve[0].accuracy > curve[-1].accuracy
    assert abs(curve[-1].accuracy - float(np.mean(probabilities.argmax(1) == labels))) < 1e-9
    shifted = np.zeros(600, dtype=bool)
    shifted[:60] = True
    record = fit_reliability(probabilities, labels, probabilities, shifted, CLASSES, 0.8,
                             seed=0)
    assert record.better_than_chance and record.test is not None
    assert record.test.flagged_shift == 0.1
    assert record.test.coverage < 0.8  # low confidence and shifted answers both left out
    assert record.test.accuracy is not None and record.test.accuracy_all is not None
    assert record.test.accuracy > record.test.accuracy_all
    per_class = record.test.per_class
    assert list(per_class) == CLASSES
    assert sum(c.images for c in per_class.values()) == 600
    assert sum(c.reliable for c in per_class.values()) == round(record.test.coverage * 600)


def test_each_class_has_its_recall_on_all_answers_and_on_the_reliable_ones() -> None:
    # COVID: 4 films, 3 answered COVID, of which 2 confidently; a confident wrong answer;
    # Normal: 2 films, both answered Normal without confidence; no Viral Pneumonia film
    labels = np.array([0, 0, 0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.5, 0.3, 0.2],
                              [0.1, 0.85, 0.05], [0.3, 0.5, 0.2], [0.2, 0.55, 0.25]])
    subset = reliable_subset(labels, probabilities, None, _record(threshold=0.6), CLASSES)
    covid, normal = subset.per_class["COVID"], subset.per_class["Normal"]
    assert list(subset.per_class) == ["COVID", "Normal"]  # a class with no film has no row
    assert (covid.images, covid.reliable, covid.recall, covid.reliable_recall) == (
        4, 3, 0.75, 2 / 3)
    assert (normal.images, normal.reliable, normal.recall, normal.reliable_recall) == (
        2, 0, 1.0, None)
    assert subset.coverage == 0.5


def test_balanced_accuracies_of_many_resamples_match_scikit_learn() -> None:
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    from shared.paired import balanced_accuracies

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (200, 15))
    labels[0] = 1  # one class only
    predicted = np.where(rng.random((200, 15)) < 0.6, labels, rng.integers(0, 3, (200, 15)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a predicted class absent from a row's labels
        expected = [balanced_accuracy_score(y, p) for y, p in zip(labels, predicted, strict=True)]
    np.testing.assert_allclose(balanced_accuracies(labels, predicted), expected, rtol=1e-12)
