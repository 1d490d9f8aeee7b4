"""The model card of a version: Markdown (kept in the version folder) and HTML (served)."""

from __future__ import annotations

from shared.manifest import (
    Calibration,
    ConfusionMatrix,
    ExternalFigures,
    ManifestDraft,
    Promotion,
    ShiftRecord,
    SourceMetrics,
    SplitMetrics,
)
from shared.registry.files import CURVES_FILE, RELIABILITY_FILE
from worker.publishing.card_lineage import lineage_section
from worker.publishing.card_reliability import reliability_section
from worker.publishing.card_text import ci, fmt, inline, table

RADIOGRAPHY_BIAS = (
    "This dataset follows the COVID-19 Radiography Database, whose viral pneumonia images and "
    "part of its normal images are pediatric (the Kermany Guangzhou set) while its COVID-19 "
    "images are of adults from other hospitals. The model may have learned age and image "
    "source instead of disease, and scores on its own test split say nothing about other "
    "hospitals. The database also contains re-encoded copies of the same film and no patient "
    "ids."
)
GENERAL_LIMITS = (
    "Labels come from folder names. Images from another scanner, hospital, age group or view "
    "(lateral, portable AP) are outside what the model saw. Probabilities are "
    "temperature-calibrated on the validation split; they are not a diagnosis."
)
CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
       "color:#111;line-height:1.5}table{border-collapse:collapse;margin:1rem 0}"
       "td,th{border:1px solid #999;padding:.25rem .6rem;text-align:right}"
       "th:first-child,td:first-child{text-align:left}img{max-width:100%}")


def _metrics(test: SplitMetrics | None, calibration: Calibration | None) -> list[str]:
    test = test or SplitMetrics(images=0)
    overall = [["images", fmt(test.images)], ["accuracy", fmt(test.accuracy)],
               ["balanced accuracy", fmt(test.balanced_accuracy)],
               ["macro F1", fmt(test.macro_f1)],
               ["macro ROC-AUC (one-vs-rest)", fmt(test.roc_auc)]]
    overall.append(["ECE, 15 bins (lower is better)", ece_words(calibration)])
    per_class = [[label, ci(r.sensitivity, r.sensitivity_ci),
                  ci(r.specificity, r.specificity_ci), ci(r.ppv, r.ppv_ci),
                  ci(r.npv, r.npv_ci), fmt(r.support)]
                 for label, r in test.per_class.items()]
    matrix = test.confusion_matrix or ConfusionMatrix(labels=[], counts=[])
    confusion = [[f"true {label}", *map(str, row)]
                 for label, row in zip(matrix.labels, matrix.counts, strict=True)]
    return [
        "## Performance on the held-out test split", "",
        *table(["metric", "value"], overall), "",
        "Per class, with 95% Wilson intervals:", "",
        *table(["class", "sensitivity", "specificity", "PPV", "NPV", "support"], per_class), "",
        "Confusion matrix (counts; rows true, columns predicted):", "",
        *table(["", *[f"predicted {label}" for label in matrix.labels]], confusion), "",
    ]


def ece_words(calibration: Calibration | None) -> str:
    """The test split's ECE before and after temperature scaling, in words: a change the
    rounding hides is said to be none, not printed as "0.099 → 0.099"."""
    if calibration is None or calibration.ece_before is None or calibration.ece_after is None:
        return "n/a"
    before, after = fmt(calibration.ece_before), fmt(calibration.ece_after)
    temperature = f"T={calibration.temperature:.2f}"
    if before != after:
        return f"{before} before temperature scaling, {after} after ({temperature})"
    why = ("calibration changed nothing" if temperature == "T=1.00"
           else "the change is below the rounding")
    return f"{before} before and after temperature scaling ({temperature}: {why})"


def _crop(crop: object) -> str:
    if not isinstance(crop, int | float) or not crop:
        return "none"
    return f"{crop * 100:g}% of the height and of the width removed from each side"


def preprocessing_rows(options: dict[str, object] | None, size: int) -> list[list[str]]:
    """The preprocessing as trained and served, step by step in words; options a later
    worker added are listed as they are."""
    rest = dict(options or {})
    crop, equalize = rest.pop("crop_border", 0.0), rest.pop("equalize", "none")
    clip, reduce_large = rest.pop("clahe_clip_limit", None), rest.pop("reduce_large", False)
    contrast = {"clahe": f"CLAHE (adaptive histogram equalization), clip limit {clip}",
                "histogram": "global histogram equalization"}.get(str(equalize), "none")
    return [["border crop", _crop(crop)],
            ["contrast", contrast],
            ["resize", f"grey, bilinear, to {size} x {size} px, as VGG16's 3 channels"],
            ["large images", "decoded at reduced size (at least 3 times the input)"
             if reduce_large else "decoded at full size"],
            *[[str(key), str(value)] for key, value in rest.items()]]


def _at_bound(calibration: Calibration | None) -> str:
    if calibration is None or calibration.at_bound is None:
        return ""
    return (f" The fit ended at the {calibration.at_bound} bound of its search: these "
            "probabilities are not calibrated.")


def _promotion(promotion: Promotion | None) -> str:
    if promotion is None:
        return "n/a"
    return f"{'activated' if promotion.activated else 'kept as a candidate'} ({promotion.reason})"


def _data(manifest: ManifestDraft) -> list[str]:
    dataset, split = manifest.dataset, manifest.split
    rows = [[name, ", ".join(f"{k}: {v}" for k, v in (part.counts if part else {}).items())]
            for name, part in split.parts().items()]
    lines = [
        "## Data", "",
        f"Dataset `{dataset.name}` ({dataset.layout}), fingerprint "
        f"`{str(dataset.fingerprint)[:16]}…`: "
        + ", ".join(f"{k} {v}" for k, v in dataset.counts.items()) + ".", "",
        f"Split: {split.method or 'n/a'}, seed {split.seed}; near-duplicate groups "
        "merged before splitting: "
        f"{'not checked' if split.duplicate_groups is None else split.duplicate_groups}.", "",
        *table(["split", "images per class"], rows), "",
        "### Known biases", "",
    ]
    classes = set(manifest.classes)
    if {"COVID", "Viral Pneumonia"} <= classes or dataset.layout == "covid19-radiography":
        lines += [RADIOGRAPHY_BIAS, ""]
    return lines + [GENERAL_LIMITS, ""]


def _shift(shift: ShiftRecord | None) -> list[str]:
    if shift is None:
        return []
    return [
        "## Knowing when not to trust a prediction", "",
        f"Every prediction carries a distribution-shift score ({shift.method}, on "
        f"{shift.features}); above {fmt(shift.threshold)}, the validation "
        f"split's {fmt(shift.threshold_quantile_of_validation, 2)} quantile, the image "
        "is flagged as unlike the training data. Share of this version's test images flagged: "
        f"{fmt(shift.test_flag_rate)}.", "",
    ]


def _by_source(by_source: dict[str, SourceMetrics] | None, holdout: str | None) -> list[str]:
    if not by_source:
        return []
    rows = [[f"{source}{' (held out)' if source == holdout else ''}", label,
             str(rates.support), ci(rates.sensitivity, rates.sensitivity_ci),
             ci(rates.specificity, rates.specificity_ci)]
            for source, report in by_source.items()
            for label, rates in report.per_class.items() if rates.support]
    return ["### Test split by source", "",
            *table(["source", "class", "support", "sensitivity", "specificity"], rows), ""]


def _external(evaluations: dict[str, ExternalFigures] | None) -> list[str]:
    if not evaluations:
        return []
    rows = [[name, str(e.images), fmt(e.balanced_accuracy), fmt(e.roc_auc),
             ", ".join(f"{label} {fmt(v)}" for label, v in e.sensitivity.items()),
             fmt(e.gate_refused), fmt(e.shift_flagged), fmt(e.shift_auroc),
             fmt(e.reliable_share), fmt(e.reliable_balanced_accuracy)]
            for name, e in evaluations.items()]
    return ["## Other hospitals' images", "",
            "Scored before publishing, on sets the version was not trained on. With one "
            "class, balanced accuracy is that class's sensitivity.", "",
            *table(["set", "images", "balanced accuracy", "macro ROC-AUC", "sensitivity",
                     "refused by the gate", "flagged as shifted", "shift AUROC vs test",
                     "reliable share", "reliable balanced accuracy"], rows), ""]


def card_markdown(version: str, manifest: ManifestDraft) -> str:
    """The card as Markdown; images are referenced by their names in the version folder."""
    training, calibration = manifest.training, manifest.calibration
    phases = training.phases if training else []
    lines = [
        f"# Model card: {version}", "",
        "**Intended use: research, not a diagnostic device.** It classifies a frontal chest "
        f"X-ray as one of {inline(', '.join(manifest.classes))}.", "",
        f"- created {manifest.created_at.isoformat()}, parent version "
        f"{manifest.parent or 'none'}",
        f"- architecture {manifest.architecture}, input {manifest.image_size} px, "
        f"preprocessing `{manifest.preprocessing}` (below)",
        f"- base weights: {manifest.base_weights.choice}; "
        + "; ".join(f"{p.phase} {p.epochs_run} of {p.epochs} epochs at learning "
                    f"rate {p.learning_rate}" for p in phases)
        + f"; batch {training.batch_size if training else None}",
        f"- at publication: {_promotion(manifest.promotion)}", "",
        "Preprocessing, the same for training and every answer:", "",
        *table(["step", "setting"],
               preprocessing_rows(manifest.preprocessing_options, manifest.image_size)), "",
        *lineage_section(manifest),
        *_data(manifest),
        *_metrics(manifest.metrics.test, calibration),
        *_by_source(manifest.metrics.test_by_source,
                    training.holdout_source if training else None),
        "## Calibration", "",
        f"Temperature {fmt(calibration.temperature if calibration else None)}, fitted on "
        "the validation split and applied to every probability the service returns; ECE on "
        f"the test split: {ece_words(calibration)}.{_at_bound(calibration)}", "",
        *_shift(manifest.distribution_shift),
        *reliability_section(manifest.reliability, manifest.chest_xray_gate),
        *_external(manifest.external_evaluations),
        f"![reliability diagram]({RELIABILITY_FILE})", "",
        "## Training curves", "", f"![loss and accuracy per epoch]({CURVES_FILE})", "",
    ]
    return "\n".join(lines)


def card_html(markdown: str, title: str) -> str:
    """A standalone HTML page of the card (no external resources)."""
    from markdown_it import MarkdownIt

    # html=False: class and dataset names come from uploads and must not become markup.
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{CSS}</style></head><body>{body}</body></html>")
