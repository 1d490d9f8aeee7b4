"""Time to accuracy on real data: train, evaluate on the test split and on an external set.

Trains the service's own pipeline (shared preprocessing, grouped split, augmentation, class
weights, calibration, shift reference) on ../shared/data/covid19-radiography from random init
(no ImageNet weights can be downloaded here) within a wall-time budget, then evaluates the
published version on ../shared/data/covid19-image-dataset as an external set. Writes JSON,
Markdown and a plot of validation balanced accuracy against wall time under bench/results/.

    .venv/bin/python bench/train_benchmark.py --size 64 --minutes 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import EXTERNAL, RADIOGRAPHY, RESULTS


class Clock:
    """A reporter that keeps every epoch's metrics with its wall time."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.epochs: list[dict[str, Any]] = []

    def epoch_end(self, progress: Any) -> bool:
        row = {"epoch": progress.epoch, "wall_s": round(time.monotonic() - self.started, 1),
               **(progress.last.model_dump(exclude_none=True) if progress.last else {})}
        self.epochs.append(row)
        print(json.dumps(row), flush=True)
        return False

    def batch_end(self, progress: Any) -> None:
        return None

    def phase(self, name: str, done: int, total: int) -> None:
        return None

    def cancel_requested(self) -> bool:
        return False


def run(args: argparse.Namespace) -> dict[str, Any]:
    from shared.config import Settings
    from shared.datasets import discover
    from shared.registry.local import LocalRegistry
    from shared.training_params import TrainingParams
    from worker.context import JobContext
    from worker.evaluation.external import evaluate_external
    from worker.runner.retrain import train_and_publish

    work = Path(tempfile.mkdtemp(prefix="cxr-train-bench-"))
    settings = Settings(models_dir=work / "models", state_dir=work / "state")
    params = TrainingParams(
        dataset="covid19-radiography", epochs=args.max_epochs, image_size=args.size,
        batch_size=args.batch, learning_rate=args.lr, base_weights="none", seed=args.seed,
        time_budget_s=int(args.minutes * 60), early_stopping_patience=args.patience,
        equalize=args.equalize, crop_border=args.crop_border, lr_schedule=args.schedule,
        warmup_fraction=args.warmup, intensity_augmentation=args.intensity_augmentation,
        activate="always")
    clock = Clock()
    started = time.monotonic()
    version = train_and_publish(discover(RADIOGRAPHY), params,
                                JobContext(settings, clock))
    total_s = time.monotonic() - started
    registry = LocalRegistry(settings.models_dir)
    externals = {name: evaluate_external(registry, version, discover(root, min_classes=1), name,
                                         settings.max_image_pixels).model_dump(mode="json")
                 for name, root in EXTERNAL.items()}
    manifest = registry.manifest(version)
    return {"params": params.model_dump(), "version": version, "total_wall_s": total_s,
            "models_dir": str(settings.models_dir),
            "epochs": clock.epochs,
            "test": manifest.metrics.test.model_dump() if manifest.metrics.test else None,
            "calibration": manifest.calibration.model_dump() if manifest.calibration else None,
            "split": manifest.split.model_dump(),
            "reliability": manifest.reliability.model_dump() if manifest.reliability else None,
            "non_radiographs": non_radiographs(registry, version),
            "external": externals["covid19-image-dataset"], "externals": externals,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "threads": settings.worker_threads}}


def non_radiographs(registry: Any, version: str) -> dict[str, Any]:
    """What the version does with the photographs and drawings scikit-image and scikit-learn
    ship: how many its gate refuses, and what it would have called the others."""
    import io

    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from shared.loading import load_version
    from shared.ml.screening import ImageLimits
    from shared.schemas import Prediction

    model = load_version(registry, version)
    folder = Path(skimage.data.__file__).parent
    files: dict[str, bytes] = {p.name: p.read_bytes() for p in sorted(folder.iterdir())
                               if p.suffix in (".png", ".jpg")}
    for i, array in enumerate(load_sample_images().images):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        files[f"sklearn-{i}"] = buffer.getvalue()
    answers = {}
    # "warn": every image is answered, the gate's verdict beside it
    for name, answer in zip(files, model.answer_images(files.values(), ImageLimits(gate="warn")),
                            strict=True):
        if not isinstance(answer, Prediction):
            raise answer
        answers[name] = {"label": answer.label, "refused": "not_a_chest_xray" in answer.reasons,
                         "reliable": answer.reliable, "reasons": answer.reasons}
    labels = [a["label"] for a in answers.values()]
    return {"images": len(answers), "refused": sum(a["refused"] for a in answers.values()),
            "called_covid": labels.count("COVID"),
            "called_covid_and_not_refused": sum(a["label"] == "COVID" and not a["refused"]
                                                for a in answers.values()),
            "reliable": sum(a["reliable"] for a in answers.values()), "answers": answers}


def first_time_to(epochs: list[dict[str, Any]], target: float) -> float | None:
    return next((e["wall_s"] for e in epochs
                 if e.get("val_balanced_accuracy", 0) >= target), None)


def markdown(result: dict[str, Any]) -> str:
    test, ext = result["test"], result["external"]["metrics"]
    rows = "\n".join(
        f"| {e['epoch']} | {e['wall_s']:.0f} | {e.get('loss', 0):.3f} | "
        f"{e.get('val_loss', 0):.3f} | {e.get('val_balanced_accuracy', 0):.3f} |"
        for e in result["epochs"])
    per_class = "\n".join(
        f"| {label} | {r['sensitivity']:.3f} | {r['specificity']:.3f} | {r['ppv']:.3f} | "
        f"{r['support']} |" for label, r in test["per_class"].items()
        if r["sensitivity"] is not None and r["ppv"] is not None)
    shift = result["external"].get("distribution_shift") or {}
    return f"""## Training benchmark: {result['params']['image_size']} px, random init

Total (train + evaluate + publish): {result['total_wall_s']:.0f} s; first epoch reaching 0.90
validation balanced accuracy at {first_time_to(result['epochs'], 0.9)} s of training.

| epoch | wall s | loss | val loss | val balanced acc |
|---|---|---|---|---|
{rows}

Test split ({test['images']} images; near-duplicate groups merged:
{result['split'].get('duplicate_groups')}): accuracy {test['accuracy']:.3f}, balanced accuracy
{test['balanced_accuracy']:.3f}, macro F1 {test['macro_f1']:.3f}, macro ROC-AUC
{test['roc_auc']:.3f}, ECE {result['calibration']['ece_before']:.3f} ->
{result['calibration']['ece_after']:.3f} (T = {result['calibration']['temperature']:.2f}).

| class | sensitivity | specificity | PPV | support |
|---|---|---|---|---|
{per_class}

External set ({ext['images']} images, covid19-image-dataset): accuracy {ext['accuracy']:.3f},
balanced accuracy {ext['balanced_accuracy']:.3f}, macro ROC-AUC {ext['roc_auc']}; flagged by
the shift score: {shift.get('flagged')} of {shift.get('images')}.

{external_table(result)}
"""


def external_table(result: dict[str, Any]) -> str:
    """Each external set: discrimination, shift, gate and the answers marked reliable."""
    rows = []
    for name, report in result["externals"].items():
        m, shift = report["metrics"], report.get("distribution_shift") or {}
        rel, gate = report.get("reliability") or {}, report.get("chest_xray_gate") or {}
        covid = (report.get("sensitivity") or {}).get("COVID")
        rows.append(f"| {name} | {m['images']} | {_f(m['balanced_accuracy'])} | "
                    f"{_f(m['roc_auc'])} | {_f(covid)} | {_f(shift.get('auroc_vs_test'))} | "
                    f"{shift.get('flagged')} | {gate.get('refused')} | {_f(rel.get('coverage'))} "
                    f"| {_f(rel.get('balanced_accuracy'))} |")
    test = result.get("reliability") or {}
    subset = test.get("test") or {}
    other = result["non_radiographs"]
    return ("| set | images | balanced acc | macro AUC | COVID sens | shift AUROC | flagged "
            "| gate refused | reliable share | reliable balanced acc |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"Internal test split: {_f(subset.get('coverage'))} of answers reliable, balanced "
            f"accuracy {_f(subset.get('balanced_accuracy'))} (all: "
            f"{_f(subset.get('balanced_accuracy_all'))}); interval "
            f"{test.get('balanced_accuracy_ci')}.\n\nNon-radiographs (skimage, sklearn): "
            f"{other['refused']} of {other['images']} refused by the gate; "
            f"{other['called_covid']} would have been called COVID, "
            f"{other['called_covid_and_not_refused']} of them not refused.")


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    epochs = result["epochs"]
    ax.plot([e["wall_s"] / 60 for e in epochs],
            [e.get("val_balanced_accuracy") for e in epochs], marker="o")
    ax.axhline(0.9, color="grey", linestyle="--", label="target 0.90")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("validation balanced accuracy")
    ax.set_title(f"time to accuracy, {result['params']['image_size']} px, 2-core CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = common.parser(__doc__)
    common.add_size(parser, 64)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--patience", type=int, default=0)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="cosine")
    parser.add_argument("--warmup", type=float, default=0.05)
    common.add_seed(parser, 1)
    parser.add_argument("--equalize", default="none")
    parser.add_argument("--crop-border", type=float, default=0.0)
    parser.add_argument("--intensity-augmentation", action="store_true")
    args = parser.parse_args()
    result = run(args)
    stem = (f"train_{args.size}px_{args.equalize}_crop{args.crop_border}_{args.schedule}"
            + ("_intensity" if args.intensity_augmentation else ""))
    text = markdown(result)
    common.save(stem, result, text)
    plot(result, RESULTS / f"{stem}.png")
    print(text)


if __name__ == "__main__":
    main()
