"""The service's VGG16 on a GPU: precision policies, XLA, and time to accuracy.

TensorFlow's GPU build cannot travel to the lent GPU machine (its wheel and CUDA libraries are
far over the size limit, and that machine cannot download), but the classifier is plain
Keras 3 (shared.ml.modeling), so this measures the same model under the backends that machine
has: JAX (every step compiled by XLA) and PyTorch (eager CUDA kernels, no XLA).

Two steps, one per machine:

    # here, with the service's venv: split (near-duplicate groups) and decode at 64 px
    .venv/bin/python bench/gpu_keras.py export --out .gpu/cxr64.npz
    # on the GPU machine (KERAS_BACKEND=jax or torch):
    python3 bench/gpu_keras.py steps --out $OUT/steps_jax.json
    python3 bench/gpu_keras.py train --data .gpu/cxr64.npz --out $OUT/train_jax.json

``steps`` times full-network training steps and inference at 224 px for float32,
mixed_bfloat16 and mixed_float16 (and, on JAX, without XLA). ``train`` trains from random
init on the exported split with the paper's augmentation, class weights and the cosine
schedule, and reports validation balanced accuracy against wall time and the test metrics.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import RADIOGRAPHY

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def export(out: Path, size: int, seed: int) -> None:
    from shared.datasets import discover
    from worker.data.pipeline import load_split_pixels, split_dataset

    dataset = discover(RADIOGRAPHY)
    splits, details = split_dataset(dataset, 0.15, 0.15, seed)
    arrays: dict[str, Any] = {"classes": np.array(dataset.classes)}
    for name, split in splits.items():
        pixels = load_split_pixels(split, size, 50_000_000)
        arrays[f"x_{name}"] = pixels[..., 0].astype(np.uint8)  # R=G=B: keep one channel
        arrays[f"y_{name}"] = split.labels
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(json.dumps({"out": str(out), "bytes": out.stat().st_size, **details}))


def _sync(value: Any) -> float:
    return float(np.asarray(value if not isinstance(value, list) else value[0]))


def _time_steps(model: Any, x: Any, y: Any, steps: int) -> dict[str, float]:
    for _ in range(3):  # compile and warm up
        _sync(model.train_on_batch(x, y))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _sync(model.train_on_batch(x, y))  # returns the loss to the host: a device sync
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "step_ms_median": 1000 * median,
        "step_ms_p90": 1000 * float(np.quantile(times, 0.9)),
        "train_images_per_s": len(x) / median,
    }


def _time_inference(model: Any, x: Any, steps: int) -> dict[str, float]:
    for _ in range(3):
        np.asarray(model.predict_on_batch(x))
    one = x[:1]
    for _ in range(3):
        np.asarray(model.predict_on_batch(one))
    batch, single = [], []
    for _ in range(steps):
        start = time.perf_counter()
        np.asarray(model.predict_on_batch(x))
        batch.append(time.perf_counter() - start)
        start = time.perf_counter()
        np.asarray(model.predict_on_batch(one))
        single.append(time.perf_counter() - start)
    return {
        "predict_images_per_s": len(x) / float(np.median(batch)),
        "predict_batch1_ms_median": 1000 * float(np.median(single)),
    }


def steps(out: Path, size: int, batch: int, n: int, policies: list[str]) -> None:
    import keras

    from shared.ml.modeling import ModelConfig, build_model, set_phase

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    x = rng.uniform(-120, 150, (batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 3, batch).astype(np.int32)
    xla = [True, False] if backend == "jax" else [False]
    rows = []
    for policy in policies:
        for jit in xla:
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            started = time.perf_counter()
            model = build_model(ModelConfig(3, size))
            set_phase(model, "full")
            model.compile(
                optimizer=keras.optimizers.Adam(1e-4),
                loss="sparse_categorical_crossentropy",
                jit_compile=jit,
            )
            row: dict[str, Any] = {
                "backend": backend,
                "policy": policy,
                "xla": jit,
                "size": size,
                "batch": batch,
            }
            row |= _time_steps(model, x, y, n if jit else max(3, n // 4))
            row["first_steps_s"] = time.perf_counter() - started
            row |= _time_inference(model, x, n if jit else max(3, n // 4))
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.write_text(json.dumps({"device": _device(), "rows": rows}, indent=2))
            keras.backend.clear_session()


def _device() -> str:
    try:
        import torch

        return str(torch.cuda.get_device_name(0))
    except Exception as exc:  # no torch or no GPU: say so
        return f"unknown ({exc})"


def train(
    data: Path,
    out: Path,
    minutes: float,
    epochs: int,
    batch: int,
    lr: float,
    policy: str,
    seed: int,
) -> None:
    import keras
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from shared.ml.modeling import ModelConfig, build_model, set_phase
    from worker.data.pipeline import augmentation
    from worker.training.fit import class_weights

    keras.utils.set_random_seed(seed)
    arrays = np.load(data)
    x = {
        s: np.repeat(arrays[f"x_{s}"][..., None], 3, axis=-1).astype(np.float32)
        for s in ("train", "validation", "test")
    }
    y = {s: arrays[f"y_{s}"] for s in ("train", "validation", "test")}
    size = x["train"].shape[1]
    # the worker's pipeline, as float32 layers: augmentation (train only), VGG16's scaling
    keras.mixed_precision.set_global_policy("float32")
    inputs = keras.Input((size, size, 3))
    scaled = keras.layers.Lambda(keras.applications.vgg16.preprocess_input)(
        augmentation(seed)(inputs)
    )
    keras.mixed_precision.set_global_policy(policy)
    classifier = build_model(ModelConfig(len(arrays["classes"]), size))
    set_phase(classifier, "full")
    model = keras.Model(inputs, classifier(scaled))
    # The worker's cosine schedule (5% warm-up) as a step schedule: under JAX the optimizer's
    # variables live in the compiled step's state, where a callback's assign does not reach.
    steps_per_epoch = -(-len(y["train"]) // batch)
    total = epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, total - total // 20, warmup_target=lr, warmup_steps=total // 20
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")
    budget = minutes * 60
    curve: list[dict[str, float]] = []
    started = time.monotonic()

    class Curve(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            predicted = np.asarray(
                model.predict(x["validation"], batch_size=256, verbose=0)
            ).argmax(1)
            elapsed = time.monotonic() - started
            curve.append(
                {
                    "epoch": epoch + 1,
                    "wall_s": round(elapsed, 1),
                    "loss": float((logs or {}).get("loss", 0)),
                    "val_balanced_accuracy": float(
                        balanced_accuracy_score(y["validation"], predicted)
                    ),
                }
            )
            last = elapsed - (curve[-2]["wall_s"] if len(curve) > 1 else 0.0)
            if elapsed + last > budget:  # a wall-time cap besides the epochs
                self.model.stop_training = True

    model.fit(
        x["train"],
        y["train"],
        batch_size=batch,
        epochs=epochs,
        verbose=0,
        class_weight=class_weights(y["train"], len(arrays["classes"])),
        callbacks=[Curve()],
    )
    train_s = time.monotonic() - started
    probabilities = np.asarray(
        model.predict(x["test"], batch_size=256, verbose=0), dtype=np.float64
    )
    predicted = probabilities.argmax(1)
    result = {
        "device": _device(),
        "backend": keras.backend.backend(),
        "policy": policy,
        "size": size,
        "batch": batch,
        "lr": lr,
        "minutes": minutes,
        "epochs_planned": epochs,
        "train_s": train_s,
        "epochs": len(curve),
        "curve": curve,
        "first_wall_s_val_bal_acc_0.90": next(
            (c["wall_s"] for c in curve if c["val_balanced_accuracy"] >= 0.9), None
        ),
        "test": {
            "images": len(predicted),
            "accuracy": float((predicted == y["test"]).mean()),
            "balanced_accuracy": float(balanced_accuracy_score(y["test"], predicted)),
            "roc_auc_macro": float(roc_auc_score(y["test"], probabilities, multi_class="ovr")),
        },
    }
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)


def main() -> None:
    parser = common.parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("--out", type=Path, required=True)
    common.add_size(p, 64)
    common.add_seed(p, 1)
    p = sub.add_parser("steps")
    p.add_argument("--out", type=Path, required=True)
    common.add_size(p, 224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--policies", default=",".join(POLICIES))
    p = sub.add_parser("train")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--policy", default="mixed_bfloat16")
    common.add_seed(p, 1)
    args = parser.parse_args()
    if args.command == "export":
        export(args.out, args.size, args.seed)
    elif args.command == "steps":
        steps(args.out, args.size, args.batch, args.n, args.policies.split(","))
    else:
        train(
            args.data,
            args.out,
            args.minutes,
            args.epochs,
            args.batch,
            args.lr,
            args.policy,
            args.seed,
        )


if __name__ == "__main__":
    main()
