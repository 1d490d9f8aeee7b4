"""Does a supervised source detector make "reliable" mean "like the films this version was
proven on"? Measured on a source left out of both training and fitting.

Loads a published version (by default the one bench/train_benchmark.py's 64 px run names),
rebuilds its split with the manifest's seed and computes the shift features of its splits and
of every external set in ``common.EXTERNAL``. For each external set held out in turn it fits
today's shift reference and, beside it, a source detector (bench/source_fitting.py; the service
does not fit one) trained against the other external sets, the ``others`` (each variant: the
blocks the detector reads, its regularization C, and its spread: the validation IQR as the
other detectors', or "tail", the spread that puts its validation quantile at the other
detectors' threshold). It reports on the held-out set the share of its wrong answers marked
unreliable, the share reliable and their accuracy, the source score's own AUROC against the
internal test split, the share of the ``others`` sets themselves flagged (in-sample), and the
internal test split's share reliable. Then the chosen variant is fitted as
a fine-tuned child's would be: one external set's patients split 60/20/20 into the training,
validation and test splits beside the radiography ones, another as ``others``, the third held
out. Writes bench/results/source_detector.json and .md.

    .venv/bin/python bench/source_detector.py [--models DIR --version V] [--features F.npz]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

import common
import numpy as np
import source_fitting
from common import EXTERNAL, RADIOGRAPHY, RESULTS
from source_fitting import WithSource

PARENT = RESULTS / "train_64px_none_crop0.0_cosine.json"
# The blocks each variant's detector reads: their statistics are contiguous, first to last.
SPANS = {"all": ("block1_pool", "block5_pool"), "b1-3": ("block1_pool", "block3_pool"),
         "b3-4": ("block3_pool", "block4_pool"), "b4-5": ("block4_pool", "block5_pool"),
         "b5": ("block5_pool", "block5_pool")}
CS = (0.001, 0.01, 0.1)
TODAY = "today"
FIELDS = ("features", "inputs", "probabilities", "labels", "groups")


@dataclass
class Part:
    """One image set: deep and input features, calibrated probabilities, labels, patients."""

    features: np.ndarray
    inputs: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    groups: np.ndarray

    def take(self, rows: np.ndarray) -> Part:
        return Part(*(getattr(self, k)[rows] for k in FIELDS))

    @staticmethod
    def join(parts: list[Part]) -> Part:
        return Part(*(np.concatenate([getattr(p, k) for p in parts]) for k in FIELDS))


def patients(paths: list[Path]) -> np.ndarray:
    """Each file's patient from its set's provenance.csv, where it has one; else the file."""
    import csv

    found: dict[Path, str] = {}
    for folder in {p.parent.parent.parent for p in paths} | {p.parent.parent for p in paths}:
        if (folder / "provenance.csv").is_file():
            with (folder / "provenance.csv").open(newline="") as handle:
                found |= {folder / row["file"]: row["patient_id"] for row in csv.DictReader(handle)
                          if row.get("patient_id")}
    return np.array([found.get(p, str(p)) for p in paths])


def _part(extractor: Any, pixels: np.ndarray, labels: np.ndarray, paths: list[Path],
          temperature: float) -> Part:
    from shared.ml.calibration import apply_temperature
    from shared.ml.shift import input_features
    from worker.data.pipeline import make_pipeline
    from worker.evaluation.shift_fitting import features_and_probabilities

    features, raw = features_and_probabilities(extractor, make_pipeline(pixels, labels, 64))
    return Part(features.astype(np.float64), input_features(pixels),
                apply_temperature(raw, temperature), labels, patients(paths))


def load_parts(registry: Any, version: str, loaded: Any) -> dict[str, Part]:
    """The version's splits, reproduced from its manifest, and every external set."""
    from shared.config import Settings
    from shared.datasets import discover, match_classes
    from shared.ml.preprocessing import load_pixels
    from shared.ml.shift import feature_model
    from worker.data.prepared import prepare_data

    manifest = registry.manifest(version)
    params, seed = manifest.training_params(), manifest.split.seed
    assert params is not None and seed is not None, "the version records no training"
    max_pixels = Settings().max_image_pixels
    data = prepare_data(discover(RADIOGRAPHY), params, seed, max_pixels)
    for name in ("train", "validation", "test"):
        recorded = getattr(manifest.split, name)
        assert recorded is None or sum(recorded.counts.values()) == len(data.labels(name))
    extractor = feature_model(loaded.model)
    parts = {name: _part(extractor, data.arrays[name], data.labels(name),
                         data.splits[name].paths, manifest.temperature)
             for name in ("train", "validation", "test")}
    for name, root in EXTERNAL.items():
        dataset = discover(root, min_classes=1)
        mapping = match_classes(dataset.classes, list(manifest.classes), name)
        files = [(path, mapping[label]) for label, paths in dataset.files.items()
                 for path in paths]
        pixels = np.stack([load_pixels(path.read_bytes(), params.image_size, max_pixels,
                                       params.preprocess_options) for path, _ in files])
        parts[name] = _part(extractor, pixels, np.array([y for _, y in files], dtype=np.int64),
                            [path for path, _ in files], manifest.temperature)
    return parts


def fit(loaded: Any, train: Part, validation: Part, others: Part | None, span: str = "all",
        c: float = 1.0) -> Any:
    """The version's reference refitted on these parts (today's, ``fit_reference`` as the
    service calls it); with ``others``, a source detector on ``span`` beside it."""
    from shared.ml.modeling import OUTPUT_LAYER
    from shared.ml.shift import block_slices
    from worker.evaluation.shift_fitting import fit_reference

    model = loaded.model
    dense = tuple(w.astype(np.float64) for w in model.get_layer(OUTPUT_LAYER).get_weights())
    slices = block_slices(model)
    reference = fit_reference(train.features, train.labels, validation.features, slices=slices,
                              inputs=(train.inputs, validation.inputs), dense=dense)
    if others is None:
        return reference
    return source_fitting.with_source(reference, train.features, others.features,
                                      validation.features, validation.inputs,
                                      source_fitting.source_span(slices, SPANS[span]), c)


def tail(reference: Any, validation: Part) -> Any:
    """``source_fitting.tail`` on the validation split."""
    return source_fitting.tail(reference, validation.features, validation.inputs)


def judged(reference: Any, part: Part, record: Any) -> dict[str, Any]:
    """The answer rule on one set: which answers are reliable, and how they did."""
    from shared.ml.reliability import reasons

    shifted = reference.scores(part.features, part.inputs) > reference.threshold
    keep = np.array([not reasons(float(p.max()), bool(s), record)
                     for p, s in zip(part.probabilities, shifted, strict=True)])
    predicted = part.probabilities.argmax(axis=1)
    wrong = predicted != part.labels
    return {"images": len(keep), "wrong": int(wrong.sum()),
            "wrong_unreliable": float((~keep[wrong]).mean()) if wrong.any() else None,
            "reliable": float(keep.mean()), "shifted": float(shifted.mean()),
            "accuracy_reliable": float((~wrong[keep]).mean()) if keep.any() else None,
            "balanced_accuracy_reliable": _balanced(part.labels[keep], predicted[keep]),
            "accuracy_all": float((~wrong).mean())}


def _balanced(labels: np.ndarray, predicted: np.ndarray) -> float | None:
    present = np.unique(labels)  # the classes of this set: one, for the COVID-only sets
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in present])) \
        if len(present) else None


def _rotation(loaded: Any, parts: dict[str, Part], reference: Any, held: str) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    row: dict[str, Any] = {
        "held_out": judged(reference, parts[held], loaded.reliability),
        "test": judged(reference, parts["test"], loaded.reliability),
        "others_shifted": {n: judged(reference, parts[n], loaded.reliability)["shifted"]
                           for n in EXTERNAL if n != held}}
    if isinstance(reference, WithSource):  # the source score alone: does it transfer?
        test, out = (reference.source.raw(parts[n].features) for n in ("test", held))
        row["source_auroc"] = float(roc_auc_score(np.r_[np.zeros(len(test)), np.ones(len(out))],
                                                  np.r_[test, out]))
    return row


def rotations(parts: dict[str, Part], loaded: Any) -> dict[str, Any]:
    """Today's reference and every variant, each external set held out in turn."""
    found: dict[str, Any] = {TODAY: {"rotations": {}}}
    for held in EXTERNAL:
        reference = fit(loaded, parts["train"], parts["validation"], None)
        found[TODAY]["rotations"][held] = _rotation(loaded, parts, reference, held)
    for span in SPANS:
        for c in CS:
            for held in EXTERNAL:
                others = Part.join([parts[n] for n in EXTERNAL if n != held])
                fitted = fit(loaded, parts["train"], parts["validation"], others, span, c)
                for scale, reference in (("iqr", fitted), ("tail", tail(fitted,
                                                                        parts["validation"]))):
                    found.setdefault(f"{span} C={c:g} {scale}", {"rotations": {}})[
                        "rotations"][held] = _rotation(loaded, parts, reference, held)
    for name, variant in found.items():
        variant["mean"] = _means(variant["rotations"])
        print(name, json.dumps(variant["mean"]), flush=True)
    return found


def _means(rows: dict[str, Any]) -> dict[str, float | None]:
    def mean(values: list[Any]) -> float | None:
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    held = [r["held_out"] for r in rows.values()]
    return {key: mean([h[key] for h in held]) for key in
            ("wrong_unreliable", "reliable", "accuracy_reliable", "balanced_accuracy_reliable")} | {
        "source_auroc": mean([r.get("source_auroc") for r in rows.values()]),
        "others_shifted": mean([v for r in rows.values() for v in r["others_shifted"].values()]),
        "test_reliable_min": min(r["test"]["reliable"] for r in rows.values())}


def choose(found: dict[str, Any], scale: str = "") -> str:
    """Declared before looking: of the variants (ending in ``scale``) that keep at least 90% of
    the internal test split reliable in every rotation, the one that marks most of the
    held-out sets' wrong answers on average, then the one whose source score alone
    separates them best (mean AUROC)."""
    fine = [n for n in found if n != TODAY and n.endswith(scale)
            and found[n]["mean"]["test_reliable_min"] >= 0.9]
    return max(fine, key=lambda n: (round(found[n]["mean"]["wrong_unreliable"], 6),
                                    found[n]["mean"]["source_auroc"]), default=TODAY)


def children(parts: dict[str, Part], loaded: Any, variants: list[str], seed: int
             ) -> dict[str, Any]:
    """Today's reference and ``variants`` fitted as a child version's would be: a site's films
    internal too (60/20/20 of its patients into train, validation and test), another set as
    ``others``, the third held out."""
    found: dict[str, Any] = {}
    for site, other, held in permutations(EXTERNAL, 3):
        # by patient: one patient's films on both sides would flatter the site's test split
        names = np.unique(parts[site].groups)
        order = np.random.default_rng(seed).permutation(len(names))
        cuts = np.split(names[order], (int(0.6 * len(names)), int(0.8 * len(names))))
        mine = [parts[site].take(np.isin(parts[site].groups, cut)) for cut in cuts]
        train = Part.join([parts["train"], mine[0]])
        validation = Part.join([parts["validation"], mine[1]])
        row = {}
        for name in (TODAY, *variants):
            span, c, scale = name.replace("C=", "").split() if name != TODAY else ("", "0", "")
            reference = fit(loaded, train, validation, None if name == TODAY else parts[other],
                            span or "all", float(c) or 1.0)
            if scale == "tail":
                reference = tail(reference, validation)
            row[name] = {key: judged(reference, part, loaded.reliability)
                         for key, part in (("site_test", mine[2]), ("test", parts["test"]),
                                           ("held_out", parts[held]))}
        found[f"{site}; {other}; {held}"] = row
    return found


def markdown(found: dict[str, Any], picks: list[str], child: dict[str, Any]) -> str:
    sets = list(EXTERNAL)
    rows = [f"| {name} | " + " | ".join(
        f"{_f(v['rotations'][n]['held_out']['wrong_unreliable'])} / "
        f"{_f(v['rotations'][n]['held_out']['reliable'])}" for n in sets) + " | " + " | ".join(
        _f(v["mean"][k]) for k in ("wrong_unreliable", "reliable", "accuracy_reliable",
                                   "source_auroc", "others_shifted", "test_reliable_min"))
        + " |" for name, v in found.items()]
    detail = [f"| {name} | {n} | {h['images']} | {h['wrong']} | {_f(h['wrong_unreliable'])} | "
              f"{_f(h['shifted'])} | {_f(h['reliable'])} | {_f(h['accuracy_reliable'])} | "
              f"{_f(h['balanced_accuracy_reliable'])} | {_f(h['accuracy_all'])} | "
              f"{_f(found[name]['rotations'][n]['test']['reliable'])} |"
              for name in [TODAY, *picks] for n in sets
              for h in [found[name]["rotations"][n]["held_out"]]]
    kids = [f"| {key} | {name} | {_f(r['site_test']['shifted'])} | {_f(r['test']['reliable'])} "
            f"| {_f(r['held_out']['wrong_unreliable'])} | {_f(r['held_out']['reliable'])} |"
            for key, row in child.items() for name, r in row.items()]
    return ("Held out: wrong answers marked unreliable / answers reliable.\n\n| variant | "
            + " | ".join(sets) + " | mean wrong unreliable | mean reliable | mean accuracy of "
            "reliable | source AUROC | others flagged (in-sample) | internal test reliable (min) "
            "|\n|" + "---|" * (len(sets) + 7) + "\n" + "\n".join(rows)
            + f"\n\nChosen: {', '.join(picks)}.\n\n| variant | held out | images | wrong | "
            "wrong unreliable | shifted | reliable | accuracy of reliable | balanced accuracy of "
            "reliable | accuracy of all | internal test reliable |\n|" + "---|" * 11 + "\n"
            + "\n".join(detail) + "\n\nAs a child version (site; others; held out):\n\n| "
            "sets | variant | site test shifted | internal test reliable | held-out wrong "
            "unreliable | held-out reliable |\n|---|---|---|---|---|---|\n" + "\n".join(kids)
            + "\n")


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--models", type=Path, help=f"models folder (default: {PARENT.name}'s)")
    parser.add_argument("--version", help="version id (default: the parent run's)")
    parser.add_argument("--features", type=Path,
                        help="read every set's features from this .npz if it exists, else "
                             "compute and write them there")
    common.add_seed(parser, 0)
    args = parser.parse_args()

    from shared.loading import load_version
    from shared.registry.local import LocalRegistry

    if args.models is None or args.version is None:
        parent = json.loads(PARENT.read_text())
        args.models, args.version = Path(parent["models_dir"]), parent["version"]
    registry = LocalRegistry(args.models)
    loaded = load_version(registry, args.version)
    if args.features is not None and args.features.is_file():
        with np.load(args.features) as kept:
            parts = {name: Part(*(kept[f"{name}|{k}"] for k in FIELDS))
                     for name in ("train", "validation", "test", *EXTERNAL)}
    else:
        parts = load_parts(registry, args.version, loaded)
        if args.features is not None:
            np.savez(args.features, **{f"{name}|{k}": getattr(part, k)
                                       for name, part in parts.items() for k in FIELDS})
    found = rotations(parts, loaded)
    picks = [n for n in dict.fromkeys([choose(found), choose(found, "tail")]) if n != TODAY]
    child = children(parts, loaded, picks, args.seed)
    text = markdown(found, picks, child)
    common.save("source_detector", {"version": args.version, "models_dir": str(args.models),
                                    "chosen": picks, "variants": found, "children": child}, text)
    print(text)


if __name__ == "__main__":
    main()
