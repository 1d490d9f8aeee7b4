"""Which VGG16 layer gives a heat map worth drawing at a version's size: Grad-CAM on
block5_conv3, block4_conv3 and block3_conv3, scored by the deletion metric on real films.

    nice -n 5 .venv/bin/python bench/explain_layers.py [--models DIR] [--films 100]
    nice -n 5 .venv/bin/python bench/explain_layers.py --steps 16 --bilinear

The version: one trained at 64 px on the first --per-class films of each class of
../shared/data/covid19-radiography (random start: no ImageNet weights here), within
--train-minutes, published into --models and reused there by later runs. The films scored:
the last films of each class, which it did not train on.

Deletion (Petsiuk et al., BMVC 2018, "RISE"): the input's pixels are replaced by the image's
mean in the order of the map's ranking, most important first, in --steps equal steps, and
the probability of the explained class is tracked; the area under that curve (lower: the map
found what the answer rests on) against the same deletion in a random order. The map ranks
pixels as drawn now (each cell one block; ties in random order) and, with --bilinear, as a
smooth blend would. Sanity (Adebayo et al., NeurIPS 2018): the maps again with the dense layer's
weights randomized; the Spearman correlation with the trained maps should be far from 1.
Times: the Grad-CAM pass alone, per image, at 64 px on the trained version and at 224 px on
random weights. Writes bench/results/explain_layers_64px.{json,md} (other --steps:
explain_layers_64px_<steps>steps).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import common
import numpy as np
from common import CLASSES, RADIOGRAPHY

if TYPE_CHECKING:
    from shared.schemas import CamLayer

LAYERS: tuple[CamLayer, ...] = ("block5_conv3", "block4_conv3", "block3_conv3")
Rows = dict["CamLayer", list[dict[str, Any]]]
HEADER = ("| layer | grid | deletion AUC | bilinear - cells | map - random "
          "| map - block5 | Spearman vs randomized dense [defined] "
          "| ms 64 px median / p90 | ms 224 px |\n|---|---|---|---|---|---|---|---|---|")


def films(per_class: int, start: int | None, stop: int | None) -> dict[str, list[Path]]:
    """Each class's films, sorted by name, sliced [start:stop]."""
    return {label: sorted((RADIOGRAPHY / label / "images").iterdir())[start:stop][:per_class]
            for label in CLASSES}


def trained_version(models: Path, per_class: int, minutes: float, size: int) -> str:
    """The version in ``models``, or one trained there now (activated)."""
    from shared.config import Settings
    from shared.datasets import discover
    from shared.registry.local import LocalRegistry
    from shared.training_params import TrainingParams
    from tests.helpers.versions import Recorder
    from worker.context import JobContext
    from worker.runner.retrain import train_and_publish

    registry = LocalRegistry(models)
    if registry.root.is_dir() and (versions := registry.versions()):
        return max(versions, key=lambda m: m.created_at).version
    data = models.parent / "train"
    for label, paths in films(per_class, None, per_class).items():
        (data / label / "images").mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy(path, data / label / "images" / path.name)
    settings = Settings(models_dir=models, state_dir=models.parent / "state",
                        export_onnx=False, export_int8=False, promotion_refuse_chance=False)
    params = TrainingParams(dataset="train", image_size=size, base_weights="none", epochs=12,
                            batch_size=16, learning_rate=1e-4, seed=1, lr_schedule="cosine",
                            time_budget_s=int(minutes * 60), activate="always")
    started = time.monotonic()
    version = train_and_publish(discover(data), params, JobContext(settings, Recorder()))
    print(f"trained {version} in {time.monotonic() - started:.0f} s", flush=True)
    return version


def rankings(grid: np.ndarray, side: int, orders: tuple[str, ...],
             rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The input's pixels, most important first, as ``orders`` names them: "nearest" by the
    map as cells (ties in random order), "bilinear" by the map blended bilinearly."""
    from PIL import Image

    ties = rng.random(side * side)
    ranked = {}
    if "nearest" in orders:
        blocks = np.kron(grid, np.ones((side // grid.shape[0], side // grid.shape[1])))
        ranked["nearest"] = np.lexsort((ties, -blocks.ravel()))
    if "bilinear" in orders:
        smooth = np.asarray(Image.fromarray(grid.astype(np.float32), mode="F").resize(
            (side, side), Image.Resampling.BILINEAR))
        ranked["bilinear"] = np.lexsort((ties, -smooth.ravel()))
    return ranked


def deleted(pixels: np.ndarray, order: np.ndarray, steps: int) -> np.ndarray:
    """``steps + 1`` copies of the image with the first 0, 1/steps, ..., all of ``order``'s
    pixels set to the image's mean."""
    side = pixels.shape[0]
    flat = pixels.reshape(side * side, -1)
    out = np.repeat(flat[None], steps + 1, axis=0)
    for k in range(1, steps + 1):
        out[k, order[: k * len(order) // steps]] = flat.mean(axis=0)
    return out.reshape(steps + 1, side, side, -1)


def randomized_dense(model: Any, seed: int) -> Any:
    """A copy of ``model`` with the dense layer's weights drawn afresh (Glorot uniform, as
    Keras initializes it; bias zero)."""
    import keras

    from shared.ml.modeling import OUTPUT_LAYER

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    dense = copy.get_layer(OUTPUT_LAYER)
    kernel, bias = dense.get_weights()
    limit = np.sqrt(6 / sum(kernel.shape))
    drawn = np.random.default_rng(seed).uniform(-limit, limit, kernel.shape)
    dense.set_weights([drawn.astype(np.float32), np.zeros_like(bias)])
    return copy


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Rank correlation of two maps; None where either is constant (an empty map)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def deletion_aucs(forward: Any, pixels: np.ndarray, orders: dict[str, np.ndarray],
                  index: int, steps: int) -> dict[str, float]:
    """The area under each order's deletion curve of class ``index``, from one pass."""
    from shared.ml.preprocessing import to_model_input

    batch = np.concatenate([deleted(pixels, order, steps) for order in orders.values()])
    probs = np.asarray(forward(to_model_input(batch)))[:, index]
    curves = probs.reshape(len(orders), steps + 1)
    return dict(zip(orders, map(float, np.trapezoid(curves, dx=1 / steps, axis=1)),
                    strict=True))


def score_films(loaded: Any, paths: list[Path], steps: int, seed: int,
                orders: tuple[str, ...]) -> Rows:
    """Per layer and film: deletion AUCs by order (the random order's one per film, shared),
    the Grad-CAM pass's seconds, and the rank correlation with the randomized-dense map."""
    import tensorflow as tf

    from shared.ml.explain import GradCam
    from shared.ml.screening import ImageLimits

    layout = {"layout": loaded.shift.layout} if loaded.shift is not None else {}
    cams = {layer: GradCam(loaded.model, bool(layout), layer=layer, **layout)
            for layer in LAYERS}
    shuffled = randomized_dense(loaded.model, seed)
    sanity = {layer: GradCam(shuffled, False, layer=layer) for layer in LAYERS}
    forward = tf.function(lambda batch: loaded.model(batch, training=False))
    rng = np.random.default_rng(seed)
    rows: Rows = {layer: [] for layer in LAYERS}
    for n, path in enumerate(paths):
        pixels = loaded.screen_file(path.read_bytes(), ImageLimits(gate="off")).pixels
        if n == 0:
            for cam in cams.values():  # the first call traces; later ones are timed
                cam(pixels)
        side = pixels.shape[0]
        ranked = {"random": rng.permutation(side * side)}
        for layer, cam in cams.items():
            started = time.perf_counter()
            activation = cam(pixels)
            seconds = time.perf_counter() - started
            for order, ranks in rankings(activation.heatmap, side, orders, rng).items():
                ranked[f"{layer}:{order}"] = ranks
            rows[layer].append({
                "film": path.name, "class": activation.index, "seconds": seconds,
                "spearman_random_dense": spearman(
                    activation.heatmap, sanity[layer](pixels, activation.index).heatmap)})
        aucs = deletion_aucs(forward, pixels, ranked, activation.index, steps)
        for layer in LAYERS:
            rows[layer][-1]["auc"] = {order: aucs[f"{layer}:{order}"] for order in orders
                                      if order != "random"} | {"random": aucs["random"]}
        print(f"{n + 1}/{len(paths)} {path.name}", flush=True)
    return rows


def interval(values: np.ndarray, seed: int, resamples: int = 2000) -> list[float]:
    """Mean and 95% percentile-bootstrap interval over images."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return [float(values.mean()), *map(float, np.percentile(means, [2.5, 97.5]))]


def summarize(rows: Rows, size: int, seed: int) -> dict[str, Any]:
    """Per layer: grid, deletion AUC by order, differences (paired, per image), sanity, time."""
    from shared.ml.explain import grid_side

    block5 = np.array([r["auc"]["nearest"] for r in rows["block5_conv3"]])
    out: dict[str, Any] = {}
    for layer, items in rows.items():
        auc = {o: np.array([r["auc"][o] for r in items]) for o in items[0]["auc"]}
        rho = np.array([r["spearman_random_dense"] for r in items
                        if r["spearman_random_dense"] is not None])
        ms = 1000 * np.array([r["seconds"] for r in items])
        out[layer] = {
            "grid": grid_side(layer, size), "images": len(items),
            "deletion_auc": {o: interval(values, seed) for o, values in auc.items()},
            "nearest_minus_random": interval(auc["nearest"] - auc["random"], seed),
            "nearest_minus_block5": interval(auc["nearest"] - block5, seed),
            "spearman_random_dense": interval(rho, seed) if len(rho) else None,
            "spearman_defined": int(len(rho)),
            "ms": {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90))}}
        if "bilinear" in auc:
            out[layer]["bilinear_minus_nearest"] = interval(auc["bilinear"] - auc["nearest"],
                                                            seed)
    return out


def timings_224(path: Path, repeats: int) -> dict[str, float]:
    """Median ms of a plain forward pass and of each layer's Grad-CAM pass at 224 px, random
    weights (the time does not depend on them), features as a served version has them."""
    from shared.ml.explain import GradCam
    from shared.ml.modeling import ModelConfig, build_model
    from shared.ml.served import serve_model

    model = build_model(ModelConfig(num_classes=len(CLASSES), image_size=224))
    loaded = serve_model("bench", list(CLASSES), 224, model)
    pixels = loaded.pixels(loaded.decode(path.read_bytes(), 10**8).gray)
    calls: dict[str, Callable[[], Any]] = {"forward": partial(loaded.infer, pixels[None])}
    for layer in LAYERS:
        calls[layer] = partial(GradCam(model, with_features=True, layer=layer), pixels)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(repeats):  # interleaved, so drift in the machine hits all alike
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(1000 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def _ci(v: list[float] | None) -> str:
    return "n/a" if v is None else f"{v[0]:.3f} ({v[1]:.3f} to {v[2]:.3f})"


def markdown(result: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {layer} | {r['grid']}x{r['grid']} | {_ci(r['deletion_auc']['nearest'])} | "
        f"{_ci(r.get('bilinear_minus_nearest'))} | {_ci(r['nearest_minus_random'])} | "
        f"{_ci(r['nearest_minus_block5'])} | {_ci(r['spearman_random_dense'])} "
        f"[{r['spearman_defined']}] | {r['ms']['median']:.0f} / {r['ms']['p90']:.0f} | "
        f"{result['ms_224'][layer]:.0f} |"
        for layer, r in result["layers"].items())
    random = result["layers"]["block5_conv3"]["deletion_auc"]["random"]
    version = result["version"]
    return f"""## Heat map layers at 64 px: the deletion metric on {result['films']} real films

Version {version['version']}: 64 px, random start, trained on {version['train_films']}
films (split 70/15/15 by the job), test balanced accuracy
{_ci(version['test_balanced_accuracy'])}. Films: the last of
each class of covid19-radiography, not trained on. Deletion in {result['steps']} steps of
the input's pixels, set to the image's mean, in the map's order (cells as drawn: ties in
random order); the probability of the predicted class (softmax before calibration). Lower
AUC: the map found what the answer rests on. The same deletion in a random order (one per
film): AUC {_ci(random)}. Mean (95% bootstrap interval over films); differences paired
per film. Sanity: Spearman correlation of each map with the map after the dense layer's
weights are drawn afresh [films where both maps are not empty]. Times: the Grad-CAM pass
alone, with the shift features as served; 224 px on random weights, median of
{result['repeats_224']} (a plain forward pass: {result['ms_224']['forward']:.0f} ms).

{HEADER}
{rows}

{result['machine']}.

    {result['command']}
"""


def arguments() -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--models", type=Path, default=Path("/tmp/cxr-explain-bench/models"))
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--train-minutes", type=float, default=9)
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--films", type=int, default=100)
    parser.add_argument("--steps", type=int, default=64,
                        help="deletion steps (default 64: one block4_conv3 cell each)")
    parser.add_argument("--bilinear", action="store_true",
                        help="also rank by the map blended bilinearly")
    parser.add_argument("--repeats-224", type=int, default=5)
    common.add_seed(parser, 0)
    return parser.parse_args()


def measure(args: argparse.Namespace, version: str) -> dict[str, Any]:
    """Every figure of the run, with its per-film rows."""
    from shared.loading import load_version
    from shared.registry.local import LocalRegistry

    registry = LocalRegistry(args.models)
    loaded = load_version(registry, version)
    test = registry.manifest(version).metrics.test
    accuracy = None if test is None or test.balanced_accuracy is None or \
        test.balanced_accuracy_ci is None else [test.balanced_accuracy,
                                                *test.balanced_accuracy_ci]
    per_class = -(-args.films // len(CLASSES))
    paths = [p for ps in films(per_class, -per_class, None).values() for p in ps][:args.films]
    orders = ("nearest", "bilinear") if args.bilinear else ("nearest",)
    started = time.monotonic()
    rows = score_films(loaded, paths, args.steps, args.seed, orders)
    return {
        "version": {"version": version, "train_films": args.per_class * len(CLASSES),
                    "test_balanced_accuracy": accuracy},
        "films": len(paths), "steps": args.steps, "seed": args.seed,
        "layers": summarize(rows, loaded.image_size, args.seed),
        "ms_224": timings_224(paths[0], args.repeats_224), "repeats_224": args.repeats_224,
        "scoring_s": time.monotonic() - started, "per_film": rows,
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "command": "nice -n 5 .venv/bin/python bench/explain_layers.py " + " ".join(
            f"--{k} {getattr(args, k)}" for k in ("films", "steps", "seed"))
        + (" --bilinear" if args.bilinear else "")}


def main() -> None:
    args = arguments()
    version = trained_version(args.models, args.per_class, args.train_minutes, 64)
    if args.train_only:
        return
    result = measure(args, version)
    stem = "explain_layers_64px" + ("" if args.steps == 64 else f"_{args.steps}steps")
    text = markdown(result)
    common.save(stem, result, text)
    print(text)


if __name__ == "__main__":
    main()
