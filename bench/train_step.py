"""Where training time goes on CPU: decoding, the tf.data pipeline, and one training step.

On --n real X-rays (a seeded sample of the COVID-19 Radiography Database) at --size px and
--batch images per batch, each variant runs in its own subprocess (so that peak RSS and
TensorFlow's import-time settings such as TF_ENABLE_ONEDNN_OPTS are separable) and prints one
JSON line; the parent collects them, prints Markdown tables and writes
bench/results/train_step.json.

Variants:
  decode          load_split_pixels (its 4-thread pool) images/s, plus one serial pass
  pipeline_aug    iterating make_pipeline(augment=augmentation(0), shuffle) on decoded arrays
  pipeline_plain  the same without augmentation or shuffling (the validation path)
  step_full       train_on_batch of the whole network (phase 'full', Adam 1e-4, sparse CE,
                  class weights) on one fixed batch; --jit 0|1 for model.compile(jit_compile)
  step_head       the same with phase 'head' (frozen base)
  features        forward pass of the base alone, and a head-only step on cached features
  fit_full_aug    model.fit of phase 'full' fed by the augmenting pipeline (what training does)

Usage: .venv/bin/python bench/train_step.py [--size 64] [--batch 32] [--n 600] [--steps 10]
       .venv/bin/python bench/train_step.py --only full_xla,full_onednn0   (re-run some runs)
       .venv/bin/python bench/train_step.py --variant step_full --pixels FILE.npz [--jit 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import RADIOGRAPHY, REPO, RESULTS

ONEDNN_LINE = re.compile(r"oneDNN custom operations are (on|off)[^\n]*")


# ---------------------------------------------------------------------------- helpers


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sample(n: int, seed: int = 0) -> tuple[list[Path], np.ndarray, list[str]]:
    """A seeded sample of n images over all classes, with integer labels."""
    from shared.datasets import discover

    dataset = discover(RADIOGRAPHY)
    paths = [p for files in dataset.files.values() for p in files]
    labels = np.array([i for i, files in enumerate(dataset.files.values()) for _ in files],
                      dtype=np.int32)
    index = np.sort(np.random.default_rng(seed).choice(len(paths), size=n, replace=False))
    return [paths[i] for i in index], labels[index], dataset.classes


def _load(pixels_file: str) -> tuple[np.ndarray, np.ndarray, int]:
    with np.load(pixels_file) as data:
        return data["pixels"], data["labels"], int(data["n_classes"])


def _timing(times: list[float], batch: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {"median_s": round(median, 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "measured_steps": len(times),
            "images_per_s": round(batch / median, 1)}


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_quiet(max_wait_s: float, busy_cores: float = 0.25) -> float:
    """Wait (at most ``max_wait_s``) until other processes use under ``busy_cores`` cores
    over 2 s: a busy neighbour on a 2-core machine skews every number. Returns the wait."""
    start = time.monotonic()
    while True:
        before = _busy_cpu_s()
        time.sleep(2.0)
        if (_busy_cpu_s() - before) / 2.0 < busy_cores or time.monotonic() - start > max_wait_s:
            return time.monotonic() - start


def _tf_info() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}


def _compiled_model(size: int, n_classes: int, phase: str, jit: bool) -> Any:
    """The worker's model and compile call (worker/training/fit.py), with jit_compile chosen."""
    import keras

    from shared.ml.modeling import ModelConfig, build_model, set_phase

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(n_classes, size))  # random base: what 'full' trains
    set_phase(model, phase)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit)
    return model


def _batch(args: argparse.Namespace) -> tuple[Any, np.ndarray, dict[int, float], int]:
    import tensorflow as tf

    from shared.ml.preprocessing import to_model_input
    from worker.training.fit import class_weights

    pixels, labels, n_classes = _load(args.pixels)
    x = tf.constant(to_model_input(pixels[:args.batch]))
    return x, labels[:args.batch], class_weights(labels, n_classes), n_classes


def _steps(fn: Any, warmup: int, steps: int,
           budget_s: float = float("inf")) -> tuple[list[float], list[float]]:
    """Seconds of every call (the first includes tracing / XLA compile) and of the measured
    ones: ``steps`` after ``warmup``, fewer (at least 3) once ``budget_s`` is spent measuring."""
    every, times = [], []
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        elif i > warmup + 2 and time.perf_counter() - start > budget_s:
            break
        t0 = time.perf_counter()
        fn()
        every.append(time.perf_counter() - t0)
        if i >= warmup:
            times.append(every[-1])
    return every, times


# ---------------------------------------------------------------------------- variants


def variant_decode(args: argparse.Namespace) -> dict[str, Any]:
    from worker.data.pipeline import Split, load_split_pixels

    paths, labels, classes = _sample(args.n)
    split = Split(paths, labels)
    t0 = time.perf_counter()
    pixels = load_split_pixels(split, args.size, 50_000_000)  # first pass: may read from disk
    first = time.perf_counter() - t0
    pooled = []
    for _ in range(3):
        t0 = time.perf_counter()
        load_split_pixels(split, args.size, 50_000_000)
        pooled.append(time.perf_counter() - t0)
    from shared.ml.preprocessing import load_pixels

    t0 = time.perf_counter()
    for path in paths:
        load_pixels(path.read_bytes(), args.size, 50_000_000)
    serial = time.perf_counter() - t0
    if args.pixels:
        np.savez(args.pixels, pixels=pixels, labels=labels, n_classes=len(classes))
    return {"images": len(paths), "classes": classes,
            "label_counts": np.bincount(labels, minlength=len(classes)).tolist(),
            "first_pass_images_per_s": round(len(paths) / first, 1),
            "pool_images_per_s": round(len(paths) / statistics.median(pooled), 1),
            "serial_images_per_s": round(len(paths) / serial, 1)}


def _pipeline(args: argparse.Namespace, augment: bool) -> dict[str, Any]:
    from worker.data.pipeline import augmentation, make_pipeline

    pixels, labels, _ = _load(args.pixels)
    info = _tf_info()
    ds = make_pipeline(pixels, labels, args.batch,
                       augment=augmentation(0) if augment else None,
                       shuffle_seed=0 if augment else None)
    t0 = time.perf_counter()
    for _ in ds:  # first epoch: tracing, autotune warm-up
        pass
    first = time.perf_counter() - t0
    images, epochs = 0, 0
    t0 = time.perf_counter()
    while epochs < 2 or time.perf_counter() - t0 < args.pipeline_seconds:
        for x, _ in ds:
            images += int(x.shape[0])
        epochs += 1
    elapsed = time.perf_counter() - t0
    return info | {"first_epoch_s": round(first, 3), "measured_epochs": epochs,
                   "images_per_s": round(images / elapsed, 1),
                   "peak_rss_mib": round(_peak_rss_mib(), 1)}


def variant_pipeline_aug(args: argparse.Namespace) -> dict[str, Any]:
    return _pipeline(args, augment=True)


def variant_pipeline_plain(args: argparse.Namespace) -> dict[str, Any]:
    return _pipeline(args, augment=False)


def _train_step(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    info = _tf_info()
    x, y, weights, n_classes = _batch(args)
    model = _compiled_model(args.size, n_classes, phase, bool(args.jit))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    rss_before = _rss_mib()
    every, times = _steps(lambda: model.train_on_batch(x, y, class_weight=weights),
                          args.warmup, args.steps, args.budget_s)
    return info | _timing(times, args.batch) | {
        "phase": phase, "jit_compile": model.jit_compile, "trainable_params": trainable,
        "first_step_s": round(every[0], 3), "all_steps_s": [round(t, 3) for t in every],
        "rss_before_first_step_mib": round(rss_before, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1)}


def variant_step_full(args: argparse.Namespace) -> dict[str, Any]:
    return _train_step(args, "full")


def variant_step_head(args: argparse.Namespace) -> dict[str, Any]:
    return _train_step(args, "head")


def variant_features(args: argparse.Namespace) -> dict[str, Any]:
    """The base's forward pass (what caching would do once) and a head step on its output."""
    import keras

    info = _tf_info()
    x, y, weights, n_classes = _batch(args)
    model = _compiled_model(args.size, n_classes, "head", False)
    base = keras.Model(model.input, model.get_layer("block5_pool").output)
    every, fwd = _steps(lambda: base.predict_on_batch(x), args.warmup, args.steps,
                        args.budget_s)
    features = base.predict_on_batch(x)
    inputs = keras.Input(features.shape[1:])
    h = keras.layers.GlobalAveragePooling2D()(inputs)
    h = keras.layers.Dropout(0.5)(h)
    head = keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(h))
    head.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"], jit_compile=False)
    _, head_times = _steps(lambda: head.train_on_batch(features, y, class_weight=weights),
                           args.warmup, max(args.steps, 30))
    return info | {
        "feature_shape": list(features.shape[1:]),
        "base_forward": _timing(fwd, args.batch) | {"first_s": round(every[0], 3)},
        "head_on_cached_features": _timing(head_times, args.batch),
        "peak_rss_mib": round(_peak_rss_mib(), 1)}


def variant_fit_full_aug(args: argparse.Namespace) -> dict[str, Any]:
    """model.fit as worker/training/fit.py runs it ('full'), timed batch end to batch end."""
    import keras

    from worker.data.pipeline import augmentation, make_pipeline
    from worker.training.fit import class_weights

    info = _tf_info()
    pixels, labels, n_classes = _load(args.pixels)
    model = _compiled_model(args.size, n_classes, "full", bool(args.jit))
    train = make_pipeline(pixels, labels, args.batch, augment=augmentation(0), shuffle_seed=0)
    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            ends.append(time.perf_counter())

    full_batches = len(labels) // args.batch
    steps = min(full_batches, args.warmup + args.steps)
    t0 = time.perf_counter()
    model.fit(train.take(steps), epochs=1, class_weight=class_weights(labels, n_classes),
              shuffle=False, verbose=0, callbacks=[Clock()])
    gaps = np.diff([t0, *ends]).tolist()
    return info | _timing(gaps[args.warmup:], args.batch) | {
        "jit_compile": model.jit_compile, "first_step_s": round(gaps[0], 3),
        "all_steps_s": [round(t, 3) for t in gaps],
        "peak_rss_mib": round(_peak_rss_mib(), 1)}


VARIANTS = {name.removeprefix("variant_"): fn for name, fn in globals().items()
            if name.startswith("variant_")}


# ---------------------------------------------------------------------------- parent


def _run(label: str, variant: str, args: argparse.Namespace, pixels: Path,
         env: dict[str, str] | None = None, jit: int = 0) -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # keep TensorFlow's INFO line about oneDNN
    environ.update(env or {})
    cmd = [sys.executable, __file__, "--variant", variant, "--pixels", str(pixels),
           "--size", str(args.size), "--batch", str(args.batch), "--n", str(args.n),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--jit", str(jit),
           "--pipeline-seconds", str(args.pipeline_seconds), "--budget-s", str(args.budget_s)]
    waited = _wait_quiet(args.quiet_wait_s)
    busy, ours = _busy_cpu_s(), _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    # CPU time other processes used meanwhile: the measurement was disturbed if it is large.
    ours = _children_cpu_s() - ours
    foreign = (_busy_cpu_s() - busy) - ours
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"variant {label} failed with exit status {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    onednn = ONEDNN_LINE.search(proc.stderr)
    result |= {"label": label, "variant": variant, "env": env or {},
               "subprocess_wall_s": round(wall, 1),
               "other_processes_cpu_s": round(max(foreign, 0.0), 1),
               "subprocess_cpu_s": round(ours, 1), "waited_for_quiet_s": round(waited, 1),
               "onednn_log_line": onednn.group(0) if onednn else None}
    print(f"  {label}: {wall:.0f} s (other processes used {max(foreign, 0):.1f} CPU s; "
          f"waited {waited:.0f} s for quiet)",
          file=sys.stderr, flush=True)
    return result


def _tables(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    d, pa, pp = runs["decode"], runs["pipeline_aug"], runs["pipeline_plain"]
    lines = [f"Input side ({args.n} real images, {args.size} px, batch {args.batch})", "",
             "| stage | images/s | notes |", "|---|---:|---|",
             f"| load_split_pixels, 4-thread pool (warm cache) | {d['pool_images_per_s']} | "
             f"first pass {d['first_pass_images_per_s']}/s; serial "
             f"{d['serial_images_per_s']}/s; other CPU {d['other_processes_cpu_s']} s |",
             f"| make_pipeline + augmentation + shuffle | {pa['images_per_s']} | first epoch "
             f"{pa['first_epoch_s']} s; peak RSS {pa['peak_rss_mib']:.0f} MiB; other CPU "
             f"{pa['other_processes_cpu_s']} s |",
             f"| make_pipeline, no augmentation | {pp['images_per_s']} | first epoch "
             f"{pp['first_epoch_s']} s; peak RSS {pp['peak_rss_mib']:.0f} MiB; other CPU "
             f"{pp['other_processes_cpu_s']} s |",
             "", f"Compute side (fixed in-memory batch of {args.batch}, {args.warmup} warm-up "
             f"+ up to {args.steps} measured steps or {args.budget_s:.0f} s, median)", "",
             "| variant | s/step (min-max, n) | images/s | first step s | "
             "RSS before step MiB | peak RSS MiB | other processes' CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def row(label: str, r: dict[str, Any]) -> str:
        before = r.get("rss_before_first_step_mib")
        peak = r.get("peak_rss_mib")
        return (f"| {label} | {r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}, "
                f"n={r['measured_steps']}) | "
                f"{r['images_per_s']} | {r.get('first_step_s', r.get('first_s', ''))} | "
                f"{'' if before is None else round(before)} | "
                f"{'' if peak is None else round(peak)} | {r.get('other_processes_cpu_s', '')} |")

    for key in ("full_nojit", "full_xla", "full_onednn0", "full_onednn1", "head_nojit",
                "fit_full_aug"):
        if key in runs:
            lines.append(row(runs[key]["title"], runs[key]))
    f = runs["features"]
    lines.append(row(f"base forward only ({'x'.join(map(str, f['feature_shape']))} features)",
                     f["base_forward"] | {"peak_rss_mib": f["peak_rss_mib"],
                                          "other_processes_cpu_s": f["other_processes_cpu_s"]}))
    lines.append(row("head step on cached features", f["head_on_cached_features"]))
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__)
    common.add_size(parser, 64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=600, help="images decoded and piped")
    parser.add_argument("--steps", type=int, default=10, help="measured training steps")
    parser.add_argument("--warmup", type=int, default=3, help="steps before measuring")
    parser.add_argument("--budget-s", type=float, default=40.0,
                        help="stop measuring a step variant after this (>= 3 steps)")
    parser.add_argument("--pipeline-seconds", type=float, default=4.0)
    parser.add_argument("--quiet-wait-s", type=float, default=60.0,
                        help="before each variant, wait up to this for other processes to idle")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="run one (child mode)")
    parser.add_argument("--pixels", help="npz of decoded images (child mode)")
    parser.add_argument("--jit", type=int, choices=(0, 1), default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_step.json")
    parser.add_argument("--only", help="comma-separated run keys (e.g. full_xla,full_onednn0) "
                        "to measure again, keeping the other runs stored in --out")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(VARIANTS[args.variant](args)))
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cxr-train-step-") as tmp:
        pixels = Path(tmp) / "pixels.npz"
        plan: list[tuple[str, str, str, dict[str, str] | None, int]] = [
            ("decode", "decode", "", None, 0),
            ("pipeline_aug", "pipeline_aug", "", None, 0),
            ("pipeline_plain", "pipeline_plain", "", None, 0),
            ("full_nojit", "step_full", "full, jit_compile=False (oneDNN env unset)", None, 0),
            ("full_xla", "step_full", "full, jit_compile=True (XLA)", None, 1),
            ("full_onednn0", "step_full", "full, jit_compile=False, TF_ENABLE_ONEDNN_OPTS=0",
             {"TF_ENABLE_ONEDNN_OPTS": "0"}, 0),
            ("full_onednn1", "step_full", "full, jit_compile=False, TF_ENABLE_ONEDNN_OPTS=1",
             {"TF_ENABLE_ONEDNN_OPTS": "1"}, 0),
            ("head_nojit", "step_head", "head (frozen base), jit_compile=False", None, 0),
            ("features", "features", "", None, 0),
            ("fit_full_aug", "fit_full_aug",
             "model.fit, full, augmenting pipeline (batch end to batch end)", None, 0),
        ]
        only = set(args.only.split(",")) if args.only else None
        if only is not None and not only <= {key for key, *_ in plan}:
            raise SystemExit(f"--only takes keys of: {', '.join(key for key, *_ in plan)}")
        runs = (json.loads(args.out.read_text())["runs"]
                if only is not None and args.out.is_file() else {})
        for key, variant, title, env, jit in plan:
            if only is None or key in only or key == "decode":  # decode writes the pixels
                result = _run(key, variant, args, pixels, env, jit) | {"title": title}
                if only is None or key in only or key not in runs:
                    runs[key] = result | {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    default_line = runs["full_nojit"]["onednn_log_line"]
    summary = {
        "onednn_default": default_line,
        "xla_speedup": round(runs["full_nojit"]["median_s"] / runs["full_xla"]["median_s"], 3),
        "xla_extra_peak_rss_mib": round(runs["full_xla"]["peak_rss_mib"]
                                        - runs["full_nojit"]["peak_rss_mib"], 1),
        "onednn1_over_onednn0_speedup": round(runs["full_onednn0"]["median_s"]
                                              / runs["full_onednn1"]["median_s"], 3),
        "aug_pipeline_over_full_step": round(runs["pipeline_aug"]["images_per_s"]
                                             / runs["full_nojit"]["images_per_s"], 1),
        "fit_over_fixed_batch_step": round(runs["fit_full_aug"]["median_s"]
                                           / runs["full_nojit"]["median_s"], 3),
    }
    table = _tables(runs, args)
    print(table)
    print()
    print("Summary: " + json.dumps(summary))
    report = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                       if k not in ("variant", "pixels", "jit", "only")},
              "remeasured_only": args.only,
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                          "python": platform.python_version(),
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "total_wall_s": round(time.perf_counter() - started, 1),
              "summary": summary, "runs": runs, "table_markdown": table}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
