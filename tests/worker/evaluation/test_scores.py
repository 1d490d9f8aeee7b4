"""The evaluation report, calibration error, reliability diagram and temperature fitting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import log_loss, roc_auc_score

from shared.manifest import ConfusionMatrix, SplitMetrics
from shared.ml.calibration import apply_temperature
from worker.evaluation.scores import (
    evaluate,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_diagram,
    summarize,
    temperature_at_bound,
    wilson_interval,
)

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
# Rows true, columns predicted; 20 images, 14 on the diagonal.
MATRIX = np.array([[5, 1, 0],
                   [2, 6, 2],
                   [0, 1, 3]])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def from_matrix(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities (0.8 on the predicted class) that give ``matrix``."""
    labels, probabilities = [], []
    for (true, predicted), count in np.ndenumerate(matrix):
        row = np.full(matrix.shape[1], 0.2 / (matrix.shape[1] - 1))
        row[predicted] = 0.8
        labels += [true] * count
        probabilities += [row] * count
    return np.array(labels), np.array(probabilities)


def sharpened(seed: int, power: float, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true distributions, and those distributions raised to ``power``.

    power 1 is a perfectly calibrated model; power 3 an over-confident one whose true
    temperature is exactly 3, since log(p**3) / 3 = log(p).
    """
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet([1.0, 1.0, 1.0], size=n)
    labels = np.array([rng.choice(3, p=p) for p in truth])
    model = truth**power
    return labels, model / model.sum(axis=1, keepdims=True)


def test_the_summary_fills_every_figure_of_a_split() -> None:
    report = summarize(*from_matrix(MATRIX), CLASSES)
    assert report.model_fields_set == {
        "images", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "roc_auc_per_class",
        "ece", "confusion_matrix", "per_class"}
    assert report.confusion_matrix == ConfusionMatrix(labels=CLASSES, counts=MATRIX.tolist())
    assert list(report.per_class) == CLASSES
    assert all(rates.sensitivity_ci and rates.specificity_ci and rates.ppv_ci and rates.npv_ci
               for rates in report.per_class.values())


def test_per_class_rates_match_the_hand_computed_matrix() -> None:
    # One-vs-rest counts (TP, FN, FP, TN) from MATRIX, total 20:
    #   COVID:           5, 1, 2, 12 -> sens 5/6,  spec 12/14, ppv 5/7, npv 12/13
    #   Normal:          6, 4, 2,  8 -> sens 6/10, spec 8/10,  ppv 6/8, npv 8/12
    #   Viral Pneumonia: 3, 1, 2, 14 -> sens 3/4,  spec 14/16, ppv 3/5, npv 14/15
    expected = {"COVID": (5 / 6, 12 / 14, 5 / 7, 12 / 13, 6),
                "Normal": (6 / 10, 8 / 10, 6 / 8, 8 / 12, 10),
                "Viral Pneumonia": (3 / 4, 14 / 16, 3 / 5, 14 / 15, 4)}
    per_class = summarize(*from_matrix(MATRIX), CLASSES).per_class
    for label, (sens, spec, ppv, npv, support) in expected.items():
        got = per_class[label]
        assert (got.sensitivity, got.specificity, got.ppv, got.npv) == pytest.approx(
            (sens, spec, ppv, npv))
        assert got.support == support
        for name in ("sensitivity", "specificity", "ppv", "npv"):
            low, high = getattr(got, f"{name}_ci")
            assert low < getattr(got, name) < high
    # Normal's specificity is 8/10: the textbook Wilson interval below.
    assert per_class["Normal"].specificity_ci == pytest.approx([0.4902, 0.9433], abs=1e-4)


def test_wilson_interval_matches_the_textbook_value() -> None:
    # p = 0.8, n = 10, z = 1.96: centre (p + z^2/2n) / (1 + z^2/n) = 0.99208 / 1.38415 = 0.71674,
    # half-width z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) = 1.96 * 0.16001 / 1.38415 = 0.22658.
    assert wilson_interval(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_overall_scores_match_hand_values() -> None:
    report = summarize(*from_matrix(MATRIX), CLASSES)
    assert report.images == 20
    assert report.accuracy == pytest.approx(14 / 20)
    # Mean recall: (5/6 + 6/10 + 3/4) / 3 = (50 + 36 + 45) / 60 / 3 = 131/180.
    assert report.balanced_accuracy == pytest.approx(131 / 180)
    # F1 = 2TP / (2TP + FP + FN): 10/13, 12/18, 6/9 -> mean (10/13 + 4/3) / 3 = 82/117.
    assert report.macro_f1 == pytest.approx(82 / 117)


def test_roc_auc_is_sklearn_macro_ovr_when_every_class_is_present() -> None:
    labels, probabilities = sharpened(seed=1, power=1.0, n=300)
    report = summarize(labels, probabilities, CLASSES)
    expected = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    assert isinstance(report.roc_auc, float)
    assert report.roc_auc == pytest.approx(expected)
    assert all(isinstance(v, float) for v in report.roc_auc_per_class.values())


def test_a_missing_class_gives_none_not_a_crash_and_valid_json() -> None:
    # No Viral Pneumonia image, but the model still predicts it twice.
    labels, probabilities = from_matrix(MATRIX[:2])
    report = summarize(labels, probabilities, CLASSES)
    assert report.roc_auc is None
    assert report.roc_auc_per_class["Viral Pneumonia"] is None
    assert isinstance(report.roc_auc_per_class["COVID"], float)
    missing = report.per_class["Viral Pneumonia"]
    assert missing.support == 0 and missing.sensitivity is None
    assert missing.sensitivity_ci is None and missing.ppv == 0.0
    text = json.dumps(report.model_dump(), allow_nan=False)
    assert SplitMetrics.model_validate_json(text) == report


def test_an_empty_split_gives_none_scores() -> None:
    report = summarize(np.zeros(0, dtype=int), np.zeros((0, 3)), CLASSES)
    json.dumps(report.model_dump(), allow_nan=False)
    assert report.images == 0 and report.accuracy is None and report.ece is None


def test_summary_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        summarize(np.array([0, 1]), np.full((2, 2), 0.5), CLASSES)


def test_expected_calibration_error_matches_a_hand_value() -> None:
    # 15 bins of width 1/15. Bin (0.8667, 0.9333]: confidences 0.88 (right) and 0.92 (wrong),
    # accuracy 0.5, mean confidence 0.9, gap 0.4. Bin (0.6667, 0.7333]: three at 0.7, two right,
    # accuracy 2/3, gap 1/30. ECE = 2/5 * 0.4 + 3/5 * 1/30 = 0.16 + 0.02 = 0.18.
    probabilities = np.array([[0.88, 0.06, 0.06], [0.92, 0.04, 0.04],
                              [0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 0, 1, 0])
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.18)
    assert summarize(labels, probabilities, CLASSES).ece == pytest.approx(0.18)


def test_negative_log_likelihood_equals_sklearn_log_loss() -> None:
    labels, probabilities = sharpened(seed=2, power=2.0, n=200)
    assert negative_log_likelihood(labels, probabilities) == pytest.approx(
        log_loss(labels, probabilities, labels=[0, 1, 2]))


def test_temperature_scaling_repairs_an_over_confident_model() -> None:
    labels, probabilities = sharpened(seed=3, power=3.0)
    temperature = fit_temperature(labels, probabilities)
    assert temperature > 1 and temperature == pytest.approx(3.0, rel=0.15)
    calibrated = apply_temperature(probabilities, temperature)
    assert negative_log_likelihood(labels, calibrated) < negative_log_likelihood(
        labels, probabilities)
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(
        labels, probabilities)


def test_temperature_of_a_calibrated_model_is_about_one() -> None:
    labels, probabilities = sharpened(seed=4, power=1.0)
    assert fit_temperature(labels, probabilities) == pytest.approx(1.0, abs=0.1)
    assert temperature_at_bound(fit_temperature(labels, probabilities)) is None


def test_a_fit_that_ends_at_a_bound_of_its_search_says_which() -> None:
    # Confident answers unrelated to the labels: the best temperature is infinite.
    rng = np.random.default_rng(0)
    guesses, labels = rng.dirichlet([0.2] * 3, size=60), rng.integers(0, 3, 60)
    assert temperature_at_bound(fit_temperature(labels, guesses)) == "upper"
    # Always right but hardly more probable than the rest: the best temperature is zero.
    labels = np.arange(30) % 3
    timid = np.full((30, 3), 0.3)
    timid[np.arange(30), labels] = 0.4
    assert temperature_at_bound(fit_temperature(labels, timid)) == "lower"


@pytest.mark.parametrize("with_after", [False, True])
def test_reliability_diagram_writes_a_png(tmp_path: Path, with_after: bool) -> None:
    labels, probabilities = sharpened(seed=5, power=3.0, n=500)
    after = apply_temperature(probabilities, 3.0) if with_after else None
    path = reliability_diagram(labels, probabilities, tmp_path / "reliability.png",
                               title="test split", probabilities_after=after)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 100


def test_evaluate_runs_a_keras_model_over_a_pipeline() -> None:
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(24, 8)).astype(np.float32)
    labels = np.arange(24) % 3
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    batches = tf.data.Dataset.from_tensor_slices((x, labels)).batch(5)
    report = evaluate(model, batches, labels, CLASSES)
    assert report.images == 24
    assert np.array(report.confusion_matrix.counts).sum() == 24
    assert isinstance(report.roc_auc, float)
    json.dumps(report.model_dump(), allow_nan=False)
