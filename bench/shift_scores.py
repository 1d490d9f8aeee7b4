"""Which score tells other hospitals' films from the training source? Candidates measured.

Loads a published version, rebuilds its split (same seed, same grouping), and computes, for
its internal test split and each external set under ../shared/data, a family of
out-of-distribution scores: the version's own shift score, Mahalanobis distances per VGG
block (class-conditional, Ledoit-Wolf), feature statistics (channel means and standard
deviations), energy and maximum softmax probability, an input-level Mahalanobis score on the
chest-gate features, and sums of their validation-standardized values. Prints the AUROC of
each against the internal test split and the share flagged at the validation split's 95th
and 99th percentiles; writes bench/results/shift_scores.json.

    .venv/bin/python bench/shift_scores.py --models DIR --version V
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common
import numpy as np
from common import EXTERNAL, RADIOGRAPHY, RESULTS

LAYERS = ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool")


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _extractor(model: Any) -> Any:
    import keras

    outputs = []
    for name in LAYERS:
        out = model.get_layer(name).output
        outputs += [keras.ops.mean(out, axis=(1, 2)), keras.ops.std(out, axis=(1, 2))]
    outputs += [model.get_layer("avg_pool").output]
    return keras.Model(model.input, outputs)


def _features(extractor: Any, pixels: np.ndarray,
              dense: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    from shared.ml.chest_gate import gate_features
    from shared.ml.preprocessing import to_model_input

    parts: list[list[np.ndarray]] = []
    for start in range(0, len(pixels), 64):
        outs = extractor(to_model_input(pixels[start:start + 64]), training=False)
        parts.append([np.asarray(o, dtype=np.float64) for o in outs])
    joined = [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    found: dict[str, np.ndarray] = {}
    for k, name in enumerate(LAYERS):
        found[f"{name}:mean"], found[f"{name}:std"] = joined[2 * k], joined[2 * k + 1]
    found["avg_pool"] = joined[-1]
    found["logits"] = joined[-1] @ dense[0] + dense[1]
    found["gate"] = np.stack([gate_features(p[..., 0]) for p in pixels])
    return found


class Mahalanobis:
    """Distance to the nearest class mean (or to the mean, with one class) under a shared
    Ledoit-Wolf covariance."""

    def __init__(self, x: np.ndarray, labels: np.ndarray | None) -> None:
        from sklearn.covariance import LedoitWolf

        labels = np.zeros(len(x), int) if labels is None else labels
        classes = np.unique(labels)
        self.means = np.stack([x[labels == c].mean(axis=0) for c in classes])
        centred = x - self.means[np.searchsorted(classes, labels)]
        self.precision = LedoitWolf(assume_centered=True).fit(centred).precision_

    def __call__(self, x: np.ndarray) -> np.ndarray:
        diff = x[:, None, :] - self.means[None]
        return np.sqrt(np.maximum(np.einsum("ncd,de,nce->nc", diff, self.precision,
                                            diff).min(axis=1), 0))


def _scores(train: dict[str, np.ndarray], labels: np.ndarray,
            sets: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    from scipy.special import logsumexp

    fitted: dict[str, Any] = {}
    for name in LAYERS:
        fitted[f"maha:{name}"] = (Mahalanobis(train[f"{name}:mean"], labels), f"{name}:mean")
        both = np.concatenate([train[f"{name}:mean"], train[f"{name}:std"]], axis=1)
        fitted[f"stats:{name}"] = (Mahalanobis(both, labels), name)
    fitted["maha:avg_pool"] = (Mahalanobis(train["avg_pool"], labels), "avg_pool")
    fitted["input:gate"] = (Mahalanobis(train["gate"], None), "gate")
    out: dict[str, dict[str, np.ndarray]] = {}
    for set_name, feats in sets.items():
        row: dict[str, np.ndarray] = {}
        for score_name, (model, key) in fitted.items():
            x = feats[key] if not score_name.startswith("stats:") else np.concatenate(
                [feats[f"{key}:mean"], feats[f"{key}:std"]], axis=1)
            row[score_name] = model(x)
        row["energy"] = -logsumexp(feats["logits"], axis=1)
        logits = feats["logits"] - feats["logits"].max(axis=1, keepdims=True)
        row["msp"] = -np.exp(logits).max(axis=1) / np.exp(logits).sum(axis=1)
        out[set_name] = row
    return out


def _combined(scores: dict[str, dict[str, np.ndarray]]) -> None:
    """Sums of scores standardized on the validation split (robustly: median and IQR)."""
    val = scores["validation"]

    def z(name: str, values: np.ndarray) -> np.ndarray:
        q1, median, q3 = np.quantile(val[name], [0.25, 0.5, 0.75])
        return (values - median) / max(q3 - q1, 1e-9)

    combos = {"sum:maha-blocks": [f"maha:{n}" for n in LAYERS],
              "sum:stats-blocks": [f"stats:{n}" for n in LAYERS],
              "sum:stats+input": [f"stats:{n}" for n in LAYERS] + ["input:gate"],
              "sum:maha+input": [f"maha:{n}" for n in LAYERS] + ["input:gate"],
              "max:stats+input": [f"stats:{n}" for n in LAYERS] + ["input:gate"],
              "sum:block4+input+energy": ["stats:block4_pool", "input:gate", "energy"],
              "max:block4+input+energy": ["stats:block4_pool", "input:gate", "energy"],
              "sum:stats+input+energy": [f"stats:{n}" for n in LAYERS] + ["input:gate",
                                                                          "energy"],
              "max:stats+input+energy": [f"stats:{n}" for n in LAYERS] + ["input:gate",
                                                                          "energy"]}
    for row in scores.values():
        for combo, names in combos.items():
            stacked = np.stack([z(n, row[n]) for n in names])
            row[combo] = stacked.max(axis=0) if combo.startswith("max:") else stacked.sum(0)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--version", required=True)
    args = parser.parse_args()

    from sklearn.metrics import roc_auc_score

    from shared.datasets import discover
    from shared.loading import load_version
    from shared.ml.preprocessing import load_pixels
    from shared.registry.local import LocalRegistry
    from worker.data.pipeline import load_split_pixels, split_dataset

    registry = LocalRegistry(args.models)
    loaded = load_version(registry, args.version)
    manifest = registry.manifest(args.version)
    training = manifest.training
    assert training is not None and manifest.split.seed is not None
    splits, _ = split_dataset(discover(RADIOGRAPHY),
                              training.validation_fraction, training.test_fraction,
                              manifest.split.seed)
    size, options = loaded.image_size, loaded.options
    pixels = {name: load_split_pixels(split, size, 50_000_000, options)
              for name, split in splits.items()}
    for name, root in EXTERNAL.items():
        pixels[name] = np.stack([load_pixels(p.read_bytes(), size, 50_000_000, options)
                                 for p in _images(root)])
    dense = loaded.model.get_layer("predictions").get_weights()
    extractor = _extractor(loaded.model)
    features = {name: _features(extractor, x, (dense[0], dense[1]))
                for name, x in pixels.items()}
    scores = _scores(features["train"], splits["train"].labels, features)
    for name, row in scores.items():  # the version's own multi-layer score, as served
        f = features[name]
        own = np.concatenate([f[f"block{k}_pool:mean"] for k in range(1, 5)] + [f["avg_pool"]],
                             axis=1)
        row["own"] = loaded.shift.scores(own) if loaded.shift is not None else own[:, 0]
    _combined(scores)
    report: dict[str, Any] = {"version": args.version, "image_size": size, "scores": {}}
    for score in scores["test"]:
        val = scores["validation"][score]
        thresholds = {q: float(np.quantile(val, q)) for q in (0.95, 0.99)}
        row: dict[str, Any] = {
            "test_flagged": {str(q): float(np.mean(scores["test"][score] > t))
                             for q, t in thresholds.items()}}
        for name in EXTERNAL:
            ext, internal = scores[name][score], scores["test"][score]
            y = np.r_[np.zeros(len(internal)), np.ones(len(ext))]
            row[name] = {"auroc": float(roc_auc_score(y, np.r_[internal, ext])),
                         **{f"flagged@{q}": float(np.mean(ext > t))
                            for q, t in thresholds.items()}}
        report["scores"][score] = row
        print(f"{score:22s} test@95 {row['test_flagged']['0.95']:.3f}  " + "  ".join(
            f"{n[:10]} auc {row[n]['auroc']:.3f} f95 {row[n]['flagged@0.95']:.3f}"
            for n in EXTERNAL), flush=True)
    common.save("shift_scores", report)
    np.savez(RESULTS / "shift_scores.npz", **{f"{set_name}|{score}": values
                                              for set_name, row in scores.items()
                                              for score, values in row.items()})


if __name__ == "__main__":
    main()
