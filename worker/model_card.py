"""The model card of a version: Markdown (kept in the version folder) and HTML (served)."""

from __future__ import annotations

from typing import Any

CARD_MD = "card.md"
CARD_HTML = "card.html"

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


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(rates: dict[str, Any], key: str) -> str:
    interval = rates.get(f"{key}_ci")
    suffix = f" ({_fmt(interval[0])}–{_fmt(interval[1])})" if interval else ""
    return _fmt(rates.get(key)) + suffix


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _metrics(test: dict[str, Any], calibration: dict[str, Any]) -> list[str]:
    overall = [[name, _fmt(test.get(key))] for name, key in (
        ("images", "images"), ("accuracy", "accuracy"),
        ("balanced accuracy", "balanced_accuracy"), ("macro F1", "macro_f1"),
        ("macro ROC-AUC (one-vs-rest)", "roc_auc"))]
    before, after = calibration.get("ece_before"), calibration.get("ece_after")
    overall.append(["ECE, 15 bins (before → after calibration)",
                    f"{_fmt(before)} → {_fmt(after)}"])
    per_class = [[label, _ci(r, "sensitivity"), _ci(r, "specificity"), _ci(r, "ppv"),
                  _ci(r, "npv"), _fmt(r.get("support"))]
                 for label, r in test.get("per_class", {}).items()]
    matrix = test.get("confusion_matrix", {"labels": [], "counts": []})
    confusion = [[f"true {label}", *map(str, row)]
                 for label, row in zip(matrix["labels"], matrix["counts"], strict=True)]
    return [
        "## Performance on the held-out test split", "",
        *_table(["metric", "value"], overall), "",
        "Per class, with 95% Wilson intervals:", "",
        *_table(["class", "sensitivity", "specificity", "PPV", "NPV", "support"], per_class), "",
        "Confusion matrix (counts; rows true, columns predicted):", "",
        *_table(["", *[f"predicted {label}" for label in matrix["labels"]]], confusion), "",
    ]


def _data(manifest: dict[str, Any]) -> list[str]:
    dataset, split = manifest["dataset"], manifest.get("split", {})
    rows = [[name, ", ".join(f"{k}: {v}" for k, v in split.get(name, {}).get("counts", {}).items())]
            for name in ("train", "validation", "test")]  # noqa: E501
    lines = [
        "## Data", "",
        f"Dataset `{dataset['name']}` ({dataset.get('layout')}), fingerprint "
        f"`{str(dataset.get('fingerprint'))[:16]}…`: "
        + ", ".join(f"{k} {v}" for k, v in dataset.get("counts", {}).items()) + ".", "",
        f"Split: {split.get('method', 'n/a')}, seed {split.get('seed')}; near-duplicate groups "
        f"merged before splitting: {split.get('duplicate_groups', 'not checked')}.", "",
        *_table(["split", "images per class"], rows), "",
        "### Known biases", "",
    ]
    classes = set(manifest["classes"])
    if {"COVID", "Viral Pneumonia"} <= classes or dataset.get("layout") == "covid19-radiography":
        lines += [RADIOGRAPHY_BIAS, ""]
    return lines + [GENERAL_LIMITS, ""]


def _shift(shift: dict[str, Any]) -> list[str]:
    if not shift:
        return []
    return [
        "## Knowing when not to trust a prediction", "",
        f"Every prediction carries a distribution-shift score ({shift.get('method')}, on "
        f"{shift.get('features')}); above {_fmt(shift.get('threshold'))}, the validation "
        f"split's {_fmt(shift.get('threshold_quantile_of_validation'), 2)} quantile, the image "
        "is flagged as unlike the training data. Share of this version's test images flagged: "
        f"{_fmt(shift.get('test_flag_rate'))}.", "",
    ]


def _reliability(record: dict[str, Any], gate: dict[str, Any]) -> list[str]:
    if not record:
        return []
    interval = record.get("balanced_accuracy_ci") or [None, None]
    test = record.get("test") or {}
    verdict = ("lies above chance" if record.get("better_than_chance") else
               "**includes chance: every answer of this version is marked unreliable, and the "
               "promotion gate does not activate it**")
    lines = [
        "### When an answer is not a finding", "",
        (f"- An image the chest-radiograph gate refuses gets no diagnosis (threshold "
         f"{_fmt(gate.get('threshold'))}; {gate.get('method')})." if gate.get("method") else
         f"- **This version has no chest-radiograph gate** ({gate.get('reason')}): it "
         "gives any image a diagnosis."),
        f"- An answer whose top probability is below {_fmt(record.get('confidence_threshold'))} "
        f"is marked `low_confidence` (the threshold keeps "
        f"{_fmt(record.get('confidence_coverage'), 2)} of the validation answers).",
        f"- The test balanced accuracy interval [{_fmt(interval[0])}, {_fmt(interval[1])}] "
        f"against chance {_fmt(record.get('chance'))} {verdict}.",
        f"- On the test split, {_fmt(test.get('coverage'))} of the answers are marked "
        f"reliable; their balanced accuracy is {_fmt(test.get('balanced_accuracy'))} "
        f"(all answers: {_fmt(test.get('balanced_accuracy_all'))}).", "",
    ]
    curve = test.get("risk_coverage") or []
    if curve:
        lines += ["Risk-coverage on the test split (most confident answers kept first):", "",
                  *_table(["coverage", "accuracy", "balanced accuracy"],
                          [[_fmt(p["coverage"], 1), _fmt(p["accuracy"]),
                            _fmt(p.get("balanced_accuracy"))] for p in curve]), ""]
    return lines


def _by_source(by_source: dict[str, Any], holdout: str | None) -> list[str]:
    if not by_source:
        return []
    rows = [[f"{source}{' (held out)' if source == holdout else ''}", label,
             str(rates["support"]), _ci(rates, "sensitivity"), _ci(rates, "specificity")]
            for source, report in by_source.items()
            for label, rates in report["per_class"].items() if rates["support"]]
    return ["### Test split by source", "",
            *_table(["source", "class", "support", "sensitivity", "specificity"], rows), ""]


def _external(evaluations: dict[str, Any]) -> list[str]:
    if not evaluations:
        return []
    rows = [[name, str(e["images"]), _fmt(e["balanced_accuracy"]), _fmt(e["roc_auc"]),
             ", ".join(f"{label} {_fmt(v)}" for label, v in e["sensitivity"].items()),
             _fmt(e["gate_refused"]), _fmt(e["shift_flagged"]), _fmt(e["shift_auroc"]),
             _fmt(e["reliable_share"]), _fmt(e["reliable_balanced_accuracy"])]
            for name, e in evaluations.items()]
    return ["## Other hospitals' images", "",
            "Scored before publishing, on sets the version was not trained on. With one "
            "class, balanced accuracy is that class's sensitivity.", "",
            *_table(["set", "images", "balanced accuracy", "macro ROC-AUC", "sensitivity",
                     "refused by the gate", "flagged as shifted", "shift AUROC vs test",
                     "reliable share", "reliable balanced accuracy"], rows), ""]


def card_markdown(manifest: dict[str, Any]) -> str:
    """The card as Markdown; images are referenced by their names in the version folder."""
    training, calibration = manifest.get("training", {}), manifest.get("calibration") or {}
    promotion = manifest.get("promotion") or {}
    lines = [
        f"# Model card: {manifest['version']}", "",
        "**Intended use: research, not a diagnostic device.** It classifies a frontal chest "
        f"X-ray as one of {', '.join(manifest['classes'])}.", "",
        f"- created {manifest['created_at']}, parent version {manifest.get('parent') or 'none'}",
        f"- architecture {manifest.get('architecture')}, input {manifest['image_size']} px, "
        f"preprocessing `{manifest.get('preprocessing')}` "
        f"({manifest.get('preprocessing_options') or 'defaults'})",
        f"- base weights: {manifest.get('base_weights', {}).get('choice')}; "
        + "; ".join(f"{p['phase']} {p.get('epochs_run')} of {p['epochs']} epochs at learning "
                    f"rate {p['learning_rate']}" for p in training.get("phases", []))
        + f"; batch {training.get('batch_size')}",
        f"- activation at publish: {promotion.get('reason', 'n/a')}", "",
        *_data(manifest),
        *_metrics(manifest.get("metrics", {}).get("test", {}), calibration),
        *_by_source(manifest.get("metrics", {}).get("test_by_source") or {},
                    training.get("holdout_source")),
        "## Calibration", "",
        f"Temperature {_fmt(calibration.get('temperature'))}, fitted on the validation split "
        "and applied to every probability the service returns.", "",
        *_shift(manifest.get("distribution_shift") or {}),
        *_reliability(manifest.get("reliability") or {}, manifest.get("chest_xray_gate") or {}),
        *_external(manifest.get("external_evaluations") or {}),
        "![reliability diagram](reliability.png)", "",
        "## Training curves", "", "![loss and accuracy per epoch](curves.png)", "",
    ]
    return "\n".join(lines)


def card_html(markdown: str, title: str) -> str:
    """A standalone HTML page of the card (no external resources)."""
    from markdown_it import MarkdownIt

    # html=False: class and dataset names come from uploads and must not become markup.
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{CSS}</style></head><body>{body}</body></html>")
