"""A new hospital learnt from its own films: a published version fine-tuned on at most N
labelled films a class of another site, and proven on that site's other films.

The parent is the 64 px version `bench/train_benchmark.py` trains from a random start on
../shared/data/covid19-radiography (its result JSON names its registry). The site is
../shared/data/covid19-image-dataset: its films are grouped by near-duplicates, and whole
groups are drawn into the labelled pool (at most N a class) or left for the held-out rest,
so no film of the rest has a copy in the pool. Every version is scored as the service
answers (calibrated probabilities, reliability, shift score) on the site's rest, on the
parent's own test split and on each covid-external hospital (COVID only: sensitivity and the
share flagged as shifted). The site's films are linked, never copied.

    .venv/bin/python bench/train_benchmark.py --size 64 --max-epochs 12 --minutes 30
    .venv/bin/python bench/site_benchmark.py --per-class 10,25,50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import DATA, EXTERNAL, RADIOGRAPHY, RESULTS

SITE = EXTERNAL["covid19-image-dataset"]
HOSPITALS = ("hannover", "siim-bimcv-ricord")


@dataclass
class Films:
    """Labelled films of one set, their labels as the version's class indices."""

    paths: list[Path]
    labels: np.ndarray


def site_pool(per_class: int, seed: int) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """The labelled pool (whole near-duplicate groups, at most ``per_class`` films a class)
    and the rest of the site's films, by the site's class names."""
    from shared.datasets import discover
    from worker.data.dedup import near_duplicate_groups

    site = discover(SITE)
    films = [(label, path) for label, paths in site.files.items() for path in paths]
    groups = np.array(near_duplicate_groups([path for _, path in films]))
    rng = np.random.default_rng(seed)
    pool: dict[str, list[Path]] = {label: [] for label in site.classes}
    rest: dict[str, list[Path]] = {label: [] for label in site.classes}
    for group in rng.permutation(np.unique(groups)):
        members = [films[i] for i in np.flatnonzero(groups == group)]
        labels = {label for label, _ in members}
        label = next(iter(labels))
        fits = len(labels) == 1 and len(pool[label]) + len(members) <= per_class
        for member_label, path in members:
            (pool if fits else rest)[member_label].append(path)
    return pool, rest


def link(folder: Path, files: dict[str, list[Path]]) -> Path:
    """A class-folder dataset of symbolic links to ``files``."""
    for label, paths in files.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for path in paths:
            (folder / label / path.name).symlink_to(path)
    return folder


def films_of(files: dict[str, list[Path]], classes: list[str]) -> Films:
    from shared.datasets import match_classes

    mapping = match_classes(list(files), classes)
    pairs = [(path, mapping[label]) for label, paths in files.items() for path in paths]
    return Films([p for p, _ in pairs], np.array([y for _, y in pairs], dtype=np.int64))


def answers(registry: Any, version: str, films: Films, max_pixels: int) -> dict[str, Any]:
    """The version's answers as the service gives them, summarized, with the predictions
    kept for paired comparisons."""
    from sklearn.metrics import roc_auc_score

    from shared.errors import CxrError
    from shared.loading import load_version
    from shared.ml.screening import ImageLimits
    from worker.evaluation.abstention import balanced_accuracy_interval

    served = load_version(registry, version)
    given = []
    for answer in served.answer_images(films.paths, ImageLimits(max_pixels=max_pixels,
                                                                gate="warn")):
        if isinstance(answer, CxrError):
            raise answer
        given.append(answer)
    probabilities = np.array([[a.probabilities[c] for c in served.classes] for a in given])
    predicted, y = probabilities.argmax(axis=1), films.labels
    reliable = np.array([a.reliable for a in given])
    shifted = np.array([bool(a.distribution_shift and a.distribution_shift.flagged)
                        for a in given])
    summary: dict[str, Any] = {
        "images": len(y), "accuracy": float(np.mean(predicted == y)),
        "reliable_share": float(reliable.mean()), "shifted_share": float(shifted.mean()),
        "predicted": predicted.tolist()}
    if len(set(y.tolist())) > 1:
        summary |= {"balanced_accuracy": _balanced(y, predicted),
                    "balanced_accuracy_ci": balanced_accuracy_interval(y, predicted),
                    "macro_auc": float(roc_auc_score(y, probabilities, multi_class="ovr")),
                    "macro_auc_ci": _auc_interval(y, probabilities),
                    "reliable_balanced_accuracy": _balanced(y[reliable], predicted[reliable])
                    if reliable.any() else None}
    return summary


def _balanced(y: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, predicted))


def _auc_interval(y: np.ndarray, probabilities: np.ndarray, resamples: int = 500) -> list[float]:
    from sklearn.metrics import roc_auc_score

    rng, found = np.random.default_rng(0), []
    for _ in range(resamples):
        pick = rng.integers(0, len(y), len(y))
        if len(set(y[pick].tolist())) == probabilities.shape[1]:
            found.append(roc_auc_score(y[pick], probabilities[pick], multi_class="ovr"))
    low, high = np.quantile(found, [0.025, 0.975])
    return [float(low), float(high)]


def fine_tune(parent: str, pool: dict[str, list[Path]], args: argparse.Namespace,
              settings: Any) -> dict[str, Any]:
    """One fine-tune of ``parent`` on ``pool``, published in the scratch registry."""
    from train_benchmark import Clock

    from shared.datasets import discover
    from shared.training_params import TrainingParams
    from worker.context import JobContext
    from worker.runner.retrain import train_and_publish

    count = max(len(paths) for paths in pool.values())
    name = f"site-{count}"
    folder = link(settings.data_dir / name, pool)
    asked: dict[str, Any] = {"dataset": name, "base_version": parent, "seed": args.seed}
    for field, value in (("learning_rate", args.lr), ("epochs", args.epochs),
                         ("replay_fraction", args.replay)):
        if value is not None:
            asked[field] = value
    clock, started = Clock(), time.monotonic()
    version = train_and_publish(discover(folder), TrainingParams(**asked),
                                JobContext(settings, clock))
    return {"version": version, "pool": {k: len(v) for k, v in pool.items()},
            "job_s": round(time.monotonic() - started, 1), "epochs": clock.epochs,
            "training_s": clock.epochs[-1]["wall_s"] if clock.epochs else None}


def paired(labels: np.ndarray, child: dict[str, Any], parent: dict[str, Any],
           names: tuple[str, str]) -> dict[str, Any]:
    from shared.paired import paired_comparison

    return paired_comparison(labels, np.array(child["predicted"]), np.array(parent["predicted"]),
                             names).model_dump()


def _promotion(registry: Any, version: str) -> dict[str, Any]:
    promotion = registry.manifest(version).promotion
    return promotion.model_dump() if promotion else {"activated": False}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import json
    import shutil

    from shared.config import Settings
    from shared.datasets import discover
    from shared.registry.local import LocalRegistry
    from worker.data.parent_data import ParentData, find_parent_data

    trained = json.loads(Path(args.parent_result).read_text())
    work = Path(tempfile.mkdtemp(prefix="cxr-site-bench-"))
    shutil.copytree(trained["models_dir"], work / "models")
    (work / "data").mkdir()
    (work / "data" / RADIOGRAPHY.name).symlink_to(RADIOGRAPHY)
    settings = Settings(models_dir=work / "models", state_dir=work / "state",
                        data_dir=work / "data")
    registry, parent = LocalRegistry(settings.models_dir), trained["version"]
    classes = list(registry.manifest(parent).classes)
    found = find_parent_data(registry.manifest(parent), settings.data_dir)
    if not isinstance(found, ParentData):
        raise SystemExit(f"the parent's films: {found}")
    pools = {n: site_pool(n, args.seed) for n in args.per_class}
    rest = pools[max(args.per_class)][1]  # the same held-out films for every pool size
    sets = {"site held-out": films_of(rest, classes),
            "parent test": Films(found.test.paths, found.test.labels.astype(np.int64)),
            **{h: films_of(discover(EXTERNAL[h], 1).files, classes) for h in HOSPITALS}}
    before = {name: answers(registry, parent, films, settings.max_image_pixels)
              for name, films in sets.items()}
    runs = []
    for n in args.per_class:
        tuned = fine_tune(parent, pools[n][0], args, settings)
        after = {name: answers(registry, tuned["version"], films, settings.max_image_pixels)
                 for name, films in sets.items()}
        tuned |= {"after": after, "paired": {
            name: paired(sets[name].labels, after[name], before[name], ("child", "parent"))
            for name in ("site held-out", "parent test")},
            "promotion": _promotion(registry, tuned["version"])}
        runs.append(tuned)
        print(json.dumps({"per_class": n, **{k: after[k].get("balanced_accuracy")
                                             for k in ("site held-out", "parent test")}}))
    return {"parent": parent, "before": before, "runs": runs, "args": vars(args),
            "held_out": {k: len(v) for k, v in rest.items()}}


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(value: Any, interval: Any) -> str:
    return _f(value) + (f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else "")


def _delta(comparison: dict[str, Any]) -> str:
    low, high = comparison["difference_ci"]
    return f"{comparison['difference']:+.3f} ({low:+.3f} to {high:+.3f})"


def _row(label: str, scored: dict[str, Any], run: dict[str, Any] | None) -> str:
    site, own = scored["site held-out"], scored["parent test"]
    hospitals = " / ".join(f"{_f(scored[h]['accuracy'])}, {_f(scored[h]['shifted_share'])}"
                           for h in HOSPITALS)
    extra = ("| | | | " if run is None else
             f"| {_delta(run['paired']['site held-out'])} | "
             f"{_delta(run['paired']['parent test'])} | {run['job_s']:.0f} "
             f"({run['training_s']:.0f}) | {'yes' if run['promotion']['activated'] else 'no'} ")
    return (f"| {label} | {_ci(site.get('balanced_accuracy'), site.get('balanced_accuracy_ci'))}"
            f" | {_ci(site.get('macro_auc'), site.get('macro_auc_ci'))} | "
            f"{_f(site['reliable_share'])} | {_f(site.get('reliable_balanced_accuracy'))} | "
            f"{_f(own.get('balanced_accuracy'))} | {hospitals} {extra}|")


def markdown(result: dict[str, Any]) -> str:
    rows = [_row("parent", result["before"], None)]
    rows += [_row(f"fine-tune, {max(run['pool'].values())} a class", run["after"], run)
             for run in result["runs"]]
    return ("## Site learning: covid19-image-dataset as a new hospital (64 px)\n\n"
            f"Held-out site films: {result['held_out']}. Parent {result['parent']}.\n\n"
            "| version | site BA (95% CI) | site macro AUC (95% CI) | site reliable share | "
            "site reliable BA | parent test BA | hannover, siim: COVID sens, shifted | "
            "site BA vs parent (paired) | parent test BA vs parent (paired) | job s "
            "(training s) | activated |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--parent-result", default=str(
        RESULTS / "train_64px_none_crop0.0_cosine.json"),
        help="bench/train_benchmark.py's result JSON, naming the parent's registry")
    parser.add_argument("--per-class", type=common.numbers, default="10,25,50",
                        help="labelled films a class to fine-tune on, each a run")
    parser.add_argument("--lr", type=float, default=None, help="default: the fine-tune's")
    parser.add_argument("--epochs", type=int, default=None, help="default: the fine-tune's")
    parser.add_argument("--replay", type=float, default=None, help="default: the fine-tune's")
    parser.add_argument("--site-layers", default=None,
                        help="comma-separated layer-name prefixes a fine-tune trains beside "
                             "the head (default: the service's SITE_PREFIXES)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    common.add_seed(parser, 1)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"no data at {DATA}")
    if args.site_layers:
        import shared.ml.modeling

        shared.ml.modeling.SITE_PREFIXES = tuple(args.site_layers.split(","))
    result = run(args)
    text = markdown(result)
    common.save(f"site_64px{args.tag}", result, text)
    print(text)


if __name__ == "__main__":
    main()
