"""Metrics of a trained model on a held-out split: discrimination, per-class rates with Wilson
intervals, calibration (ECE, reliability diagram) and temperature scaling."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from shared.manifest import ClassRates, ConfusionMatrix, SplitMetrics, TemperatureBound
from shared.ml.calibration import apply_temperature

ECE_BINS = 15
CONFIDENCE_LEVEL = 0.95
# Wide enough for any plausible network (Guo et al. 2017 report T of about 1..3) while keeping
# the bounded search away from T -> 0, where softmax(log p / T) degenerates to one-hot.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# The bounded search stops within its tolerance (xatol 1e-4) of an end, never on it.
BOUND_TOLERANCE = 1e-3
_TINY = np.finfo(np.float64).tiny


def wilson_interval(successes: int, trials: int) -> list[float] | None:
    """The 95% Wilson score interval of ``successes / trials`` as [low, high]; None if no trials."""
    if trials == 0:
        return None
    interval = binomtest(int(successes), int(trials)).proportion_ci(
        confidence_level=CONFIDENCE_LEVEL, method="wilson")
    return [float(interval.low), float(interval.high)]


def _rate(successes: int, trials: int) -> tuple[float | None, list[float] | None]:
    # None rather than NaN: the report goes into JSON, which has no NaN.
    if trials == 0:
        return None, None
    return float(successes / trials), wilson_interval(successes, trials)


def per_class_rates(matrix: np.ndarray, classes: list[str]) -> dict[str, ClassRates]:
    """One-vs-rest sensitivity, specificity, PPV and NPV per class, with Wilson intervals."""
    total = int(matrix.sum())
    report: dict[str, ClassRates] = {}
    for i, label in enumerate(classes):
        tp = int(matrix[i, i])
        fn = int(matrix[i, :].sum()) - tp
        fp = int(matrix[:, i].sum()) - tp
        tn = total - tp - fn - fp
        entry: dict[str, Any] = {"support": tp + fn}
        for name, (hits, trials) in {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp),
                                     "ppv": (tp, tp + fp), "npv": (tn, tn + fn)}.items():
            entry[name], entry[f"{name}_ci"] = _rate(hits, trials)
        report[label] = ClassRates.model_validate(entry)
    return report


def roc_auc_per_class(labels: np.ndarray, probabilities: np.ndarray,
                      classes: list[str]) -> dict[str, float | None]:
    """One-vs-rest ROC-AUC of each class; None where the class or its complement is absent."""
    aucs: dict[str, float | None] = {}
    for i, label in enumerate(classes):
        positive = labels == i
        defined = bool(positive.any() and not positive.all())
        aucs[label] = float(roc_auc_score(positive, probabilities[:, i])) if defined else None
    return aucs


def _macro_average(values: dict[str, float | None]) -> float | None:
    defined = [v for v in values.values() if v is not None]
    return float(np.mean(defined)) if defined and len(defined) == len(values) else None


def calibration_bins(labels: np.ndarray, probabilities: np.ndarray,
                     bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, accuracy and mean top-label confidence per equal-width confidence bin.

    Bin ``b`` holds confidences in ``(b / bins, (b + 1) / bins]``, as in Guo et al. (2017);
    accuracy and confidence are 0 in empty bins (their count says so).
    """
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.digitize(confidence, edges[1:-1], right=True)
    counts = np.bincount(index, minlength=bins)
    safe = np.maximum(counts, 1)
    accuracy = np.bincount(index, weights=correct, minlength=bins) / safe
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / safe
    return counts, accuracy, mean_confidence


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over bins of (bin share) * |accuracy - mean confidence|."""
    counts, accuracy, confidence = calibration_bins(labels, probabilities, bins)
    if counts.sum() == 0:
        raise ValueError("the calibration error of no images is undefined")
    return float(np.sum(counts / counts.sum() * np.abs(accuracy - confidence)))


def negative_log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean -log p(true class), clipped away from log(0).

    Equals sklearn's log_loss on normalized rows; computed directly because the temperature
    search calls it many times and log_loss warns on float32 rows that sum to 1 - 1e-7.
    """
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _TINY, None))))


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature T > 0 that minimizes the NLL of ``apply_temperature(p, T)``.

    Fit on a validation split, never on the test split the calibration is judged on.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    result = minimize_scalar(
        lambda t: negative_log_likelihood(labels, apply_temperature(probabilities, t)),
        bounds=TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(result.x)


def temperature_at_bound(temperature: float) -> TemperatureBound | None:
    """The end of TEMPERATURE_BOUNDS a fitted temperature stopped at, if any: the best
    temperature lies beyond it, so the fit did not calibrate the probabilities."""
    low, high = TEMPERATURE_BOUNDS
    if temperature <= low + BOUND_TOLERANCE:
        return "lower"
    if temperature >= high - BOUND_TOLERANCE:
        return "upper"
    return None


def reliability_diagram(labels: np.ndarray, probabilities: np.ndarray, path: Path,
                        bins: int = ECE_BINS, title: str = "Reliability diagram", *,
                        probabilities_after: np.ndarray | None = None) -> Path:
    """Write a PNG: accuracy per confidence bin against the diagonal, and the bin counts.

    With ``probabilities_after`` (e.g. after temperature scaling) both series are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    series = [("model" if probabilities_after is None else "before", probabilities)]
    if probabilities_after is not None:
        series.append(("after", probabilities_after))
    centers = (np.arange(bins) + 0.5) / bins
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), dpi=100, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    try:
        top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
        width = 1 / bins / len(series)
        for k, (name, probs) in enumerate(series):
            counts, accuracy, _ = calibration_bins(labels, probs, bins)
            ece = expected_calibration_error(labels, probs, bins)
            shown = counts > 0  # an empty bin has no accuracy; leave a gap, not a 0 bar
            offset = (k - (len(series) - 1) / 2) * width
            top.bar(centers[shown] + offset, accuracy[shown], width=width, alpha=0.7,
                    edgecolor="black", label=f"{name} (ECE {ece:.3f})")
            bottom.bar(centers + offset, counts, width=width, alpha=0.7, label=name)
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
        top.legend(loc="upper left")
        bottom.set(xlabel="confidence (top label)", ylabel="images")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _overall_scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float | None]:
    n_classes = probabilities.shape[1]
    if len(labels) == 0:
        # sklearn refuses empty input; an empty split has no scores rather than failing training.
        return dict.fromkeys(("accuracy", "balanced_accuracy", "macro_f1", "ece"))
    predicted = probabilities.argmax(axis=1)
    with warnings.catch_warnings():
        # A predicted class absent from the labels is expected on small splits; the report
        # already shows it (support 0, ROC-AUC None), so the warning is noise in the worker log.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(labels, predicted))
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": balanced,
        "macro_f1": float(f1_score(labels, predicted, labels=list(range(n_classes)),
                                   average="macro", zero_division=0.0)),
        "ece": expected_calibration_error(labels, probabilities),
    }


def summarize(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> SplitMetrics:
    """The test report, JSON-ready: overall scores, ROC-AUC, ECE, confusion matrix, per-class rates.

    Undefined numbers (no images, an absent class, a zero denominator) are None, never NaN.
    """
    labels = np.asarray(labels).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(labels), len(classes)):
        raise ValueError(f"probabilities of shape {probabilities.shape} do not match "
                         f"{len(labels)} labels and {len(classes)} classes")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"labels must lie in 0..{len(classes) - 1}")
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    if len(labels):
        matrix = confusion_matrix(labels, probabilities.argmax(axis=1),
                                  labels=list(range(len(classes))))
    scores = _overall_scores(labels, probabilities)
    aucs = roc_auc_per_class(labels, probabilities, classes)
    return SplitMetrics(
        images=len(labels),
        accuracy=scores["accuracy"],
        balanced_accuracy=scores["balanced_accuracy"],
        macro_f1=scores["macro_f1"],
        # Macro one-vs-rest, as roc_auc_score(multi_class="ovr", average="macro") defines it:
        # the unweighted mean of the per-class AUCs, undefined if any of them is.
        roc_auc=_macro_average(aucs),
        roc_auc_per_class=aucs,
        ece=scores["ece"],
        confusion_matrix=ConfusionMatrix(labels=list(classes), counts=matrix.tolist()),
        per_class=per_class_rates(matrix, classes),
    )


def evaluate(model: Any, batches: Any, labels: np.ndarray, classes: list[str]) -> SplitMetrics:
    """Run the model over a pipeline of (input, label) batches and summarize."""
    probabilities = model.predict(batches, verbose=0)
    return summarize(labels, np.asarray(probabilities), classes)
