"""INT8 against float32 on one trained version, in one run on one machine.

1. train: a 224 px version on real radiographs (random init: ImageNet weights cannot be
   downloaded here), published as the worker publishes, INT8 copy and its check included;
2. calibration: the INT8 check of each calibration method on the same version and holdout;
3. ceilings: the forward pass called directly in each runtime and precision (TensorFlow
   float32, ONNX Runtime float32 and INT8, and TensorFlow with oneDNN bfloat16), batch 1 to 32;
4. service: `cxr serve` with CXR_INFERENCE_PRECISION=auto and =float32 at concurrency 1, 4, 16,
   64, and requests of 8 images against requests of one at the same concurrency.

Writes bench/results/precision_224px.{json,md} and prints the table.

    .venv/bin/python bench/precision_benchmark.py        # also run by make bench-serve
    .venv/bin/python bench/precision_benchmark.py --reuse /tmp/cxr-precision-bench-XXXX

``--reuse`` takes the version an earlier run trained (the earliest in its folder) and makes
its publish-time INT8 copy and check again with this code, on its own split (recomputed: the
split is seeded), publishing it again with the copy where the check keeps it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import httpx
import numpy as np
from common import CLASSES, RADIOGRAPHY
from serve_benchmark import (
    ceiling_now,
    load,
    request_images,
    service_env,
    start,
    summarize,
    timed,
)


def train(work: Path, size: int, per_class: int, epochs: int) -> tuple[str, float]:
    """A version trained and published in process, as a worker does; its seconds."""
    from shared.config import Settings
    from shared.datasets import discover
    from shared.training_params import TrainingParams
    from tests.helpers.versions import Recorder
    from worker.context import JobContext
    from worker.runner.retrain import train_and_publish

    data = work / "train"
    for label in CLASSES:
        (data / label / "images").mkdir(parents=True)
        for path in sorted((RADIOGRAPHY / label / "images").iterdir())[200:200 + per_class]:
            (data / label / "images" / path.name).write_bytes(path.read_bytes())
    settings = Settings(models_dir=work / "models", state_dir=work / "state",
                        promotion_refuse_chance=False)
    params = TrainingParams(dataset="train", image_size=size, base_weights="none",
                            epochs=epochs, batch_size=16, learning_rate=1e-4, seed=0,
                            validation_fraction=0.15, test_fraction=0.45)
    started = time.monotonic()
    version = train_and_publish(discover(data), params, JobContext(settings, Recorder()))
    return version, time.monotonic() - started


def publish_check_again(work: Path) -> tuple[str, Any]:
    """The earliest version in ``work``, published again with its INT8 copy made and checked
    as the worker would now; the new version and the check's record."""
    from shared.config import Settings
    from shared.datasets import discover
    from shared.ml.shift import ShiftReference
    from shared.registry.local import LocalRegistry
    from tests.helpers.versions import republish
    from worker.data.prepared import prepare_data
    from worker.publishing.int8 import Int8Data, Int8Policy, export_int8

    registry = LocalRegistry(work / "models")
    manifest = min(registry.versions(), key=lambda m: m.created_at)
    assert manifest.training is not None and manifest.training.seed is not None
    params = manifest.training_params()
    assert params is not None
    settings = Settings()
    prepared = prepare_data(discover(work / "train"), params, manifest.training.seed,
                            settings.max_image_pixels)
    shift = registry.verified_file(manifest.version, "shift.npz")
    float_file = registry.verified_file(manifest.version, "model.onnx")
    assert shift is not None and float_file is not None
    data = Int8Data(prepared.arrays["train"], prepared.arrays["test"], prepared.labels("test"),
                    manifest.temperature, ShiftReference.load(shift), seed=manifest.training.seed)
    folder = work / "int8-publish"
    folder.mkdir(exist_ok=True)
    record = export_int8(folder, float_file, data, Int8Policy.from_settings(settings))
    extra = {"model.int8.onnx": folder / "model.int8.onnx"} if record.file else {}
    return republish(registry, manifest.version, registry, extra, int8=record), record


def int8_data(models: Path, version: str, work: Path, count: int) -> Any:
    """The version's training images (for calibrating), and radiographs it never saw (a
    holdout of our own, for comparing methods)."""
    from shared.loading import load_version
    from shared.registry.local import LocalRegistry
    from worker.publishing.int8 import Int8Data

    loaded = load_version(LocalRegistry(models), version)

    def prepared(paths: list[Path]) -> np.ndarray:
        return np.stack([loaded.pixels(loaded.decode(p.read_bytes(), 10**8).gray)
                         for p in paths])

    def split(paths: dict[str, list[Path]]) -> tuple[np.ndarray, np.ndarray]:
        labels = np.concatenate([np.full(len(paths[c]), loaded.classes.index(c))
                                 for c in CLASSES])
        return prepared([p for c in CLASSES for p in paths[c]]), labels

    train = split({c: sorted((work / "train" / c / "images").iterdir()) for c in CLASSES})
    test = split({c: sorted((RADIOGRAPHY / c / "images").iterdir())[400:400 + count]
                  for c in CLASSES})
    return Int8Data(train[0], test[0], test[1], loaded.temperature, loaded.shift)


def calibration_methods(models: Path, version: str, data: Any, work: Path
                        ) -> tuple[list[dict[str, Any]], Path]:
    """The check's figures for each method, and a copy made with loose limits (timed
    whatever the check says)."""
    from shared.registry.local import LocalRegistry
    from worker.publishing.int8 import Int8Policy, export_int8

    float_file = LocalRegistry(models).verified_file(version, "model.onnx")
    assert float_file is not None
    rows = []
    for method in ("minmax", "percentile", "entropy"):
        folder = work / f"int8-{method}"
        folder.mkdir(exist_ok=True)
        started = time.monotonic()
        record = export_int8(folder, float_file, data,
                             Int8Policy(calibration=method, min_agreement=0.0,
                                        max_balanced_accuracy_drop=1.0))
        check = record.check.model_dump() if record.check else {"error": record.error}
        rows.append({"method": method, "seconds": time.monotonic() - started, **check})
        print(json.dumps(rows[-1]), flush=True)
    return rows, work / "int8-minmax"


def bf16_forward(model: Any, size: int, layout: str) -> Any:
    """The float model rebuilt under Keras' mixed_bfloat16 policy (oneDNN's AVX-512 BF16)."""
    import keras

    from shared.ml.modeling import ModelConfig, build_model
    from shared.ml.runtimes import compiled_forward

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        copy = build_model(ModelConfig(model.output_shape[-1], size))
        copy.set_weights(model.get_weights())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return compiled_forward(copy, size, True, layout=layout)


def ceilings(models: Path, version: str, int8_file: Path, batches: list[int]
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from shared.loading import load_version
    from shared.ml.runtimes import OnnxForward, compiled_forward
    from shared.registry.local import LocalRegistry

    loaded = load_version(LocalRegistry(models), version)
    size = loaded.image_size
    layout = loaded.shift.layout if loaded.shift else None
    onnx = LocalRegistry(models).verified_file(version, "model.onnx")
    assert onnx is not None and layout is not None
    forwards = {
        "tensorflow float32": compiled_forward(loaded.model, size, True, layout=layout),
        "onnx float32": OnnxForward(onnx, True),
        "onnx int8": OnnxForward(int8_file, True),
        "tensorflow bf16": bf16_forward(loaded.model, size, layout),
    }
    rows = []
    for name, forward in forwards.items():
        for batch in batches:
            x = np.random.default_rng(batch).uniform(-120, 150, (batch, size, size, 3))
            x = x.astype(np.float32)
            forward(x)
            rows.append(timed(name, forward, x, max(3, 24 // batch)))
    return rows, forwards


def service(url: str, images: list[bytes], levels: list[int], seconds: float, name: str,
            recheck: Any, per_request: int = 1) -> list[dict[str, Any]]:
    rows = []
    asyncio.run(load(url, images, 4, 3, per_request=per_request))  # warm the path
    for concurrency in levels:
        now = recheck()
        run = asyncio.run(load(url, images, concurrency, seconds, per_request=per_request))
        rows.append({"server": name, "concurrency": concurrency, "images_per_request":
                     per_request, "ceiling_now": now,
                     **summarize(run["records"], run["elapsed_s"], per_request)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    check = (result.get("publish_check") or {}).get("check") or {}
    lines = [f"Version: {result['training']}", "",
             f"Publish check on the version's test split ({check.get('images')} images): "
             f"top-1 agreement {check.get('top1_agreement', 0):.2%}, balanced accuracy "
             f"{check.get('balanced_accuracy_float', 0):.3f} float and "
             f"{check.get('balanced_accuracy_int8', 0):.3f} INT8, largest probability "
             f"difference {check.get('max_probability_difference', 0):.4f}, shift flags "
             f"agree on {check.get('shift_flag_agreement') or 0:.2%}; kept: "
             f"{(result.get('publish_check') or {}).get('file') is not None}.", "",
             "Each calibration method on radiographs the version never saw:", "",
             "| method | agreement | BA float | BA int8 | max prob diff | shift flags agree |"
             " seconds |", "|---|---|---|---|---|---|---|"]
    for r in result["calibration"]:
        lines.append(f"| {r['method']} | {r.get('top1_agreement', 0):.2%} | "
                     f"{r.get('balanced_accuracy_float', 0):.3f} | "
                     f"{r.get('balanced_accuracy_int8', 0):.3f} | "
                     f"{r.get('max_probability_difference', 0):.3f} | "
                     f"{r.get('shift_flag_agreement') or 0:.2%} | {r['seconds']:.0f} |")
    lines += ["", "| runtime | " + " | ".join(f"b{b}" for b in result["batches"]) +
              " | batch-1 ms |", "|---|" + "---|" * (len(result["batches"]) + 1)]
    for name in dict.fromkeys(r["runtime"] for r in result["ceiling"]):
        rows = [r for r in result["ceiling"] if r["runtime"] == name]
        lines.append(f"| {name} | " + " | ".join(f"{r['images_per_s']:.1f}" for r in rows) +
                     f" | {rows[0]['latency_ms']:.0f} |")
    lines += ["", "| server | images/request | concurrency | images/s | ceiling now | p50 ms "
              "| p99 ms | errors |", "|---|---|---|---|---|---|---|---|"]
    for r in result["service"]:
        lines.append(f"| {r['server']} | {r['images_per_request']} | {r['concurrency']} | "
                     f"{r['throughput']:.1f} | {r['ceiling_now']:.1f} | {r['p50_ms']:.0f} | "
                     f"{r['p99_ms']:.0f} | {r['errors']} |")
    best = {name: max(r["images_per_s"] for r in result["ceiling"] if r["runtime"] == name)
            for name in ("onnx float32", "tensorflow float32", "onnx int8")}
    float_ceiling = max(best["onnx float32"], best["tensorflow float32"])
    auto16 = next(r for r in result["service"] if r["server"] == "auto"
                  and r["concurrency"] == 16 and r["images_per_request"] == 1)
    auto1 = next(r for r in result["service"] if r["server"] == "auto"
                 and r["concurrency"] == 1 and r["images_per_request"] == 1)
    int8_b1 = next(r["latency_ms"] for r in result["ceiling"]
                   if r["runtime"] == "onnx int8" and r["batch"] == 1)
    lines += ["", f"Served by auto: {result['served']}.",
              f"Concurrency 16 (auto): {auto16['throughput']:.1f} images/s = "
              f"{auto16['throughput'] / float_ceiling:.2f}x the float32 ceiling "
              f"({float_ceiling:.1f}) and {auto16['throughput'] / best['onnx int8']:.0%} of the "
              f"INT8 ceiling ({best['onnx int8']:.1f}).",
              f"Concurrency 1 (auto): p50 {auto1['p50_ms']:.0f} ms against an INT8 batch-1 pass "
              f"of {int8_b1:.0f} ms."]
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__)
    common.add_size(parser, 224)
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--holdout-per-class", type=int, default=100)
    common.add_load(parser, seconds=15, batches="1,2,4,8,16,32")
    common.add_port(parser, 8393)
    parser.add_argument("--reuse", type=Path, help="the folder of an earlier run")
    args = parser.parse_args()
    from shared.registry.local import LocalRegistry

    if args.reuse:
        work = args.reuse
        version, _ = publish_check_again(work)
        trained = f"trained by an earlier run in {work}"
    else:
        work = Path(tempfile.mkdtemp(prefix="cxr-precision-bench-"))
        version, train_s = train(work, args.size, args.per_class, args.epochs)
        trained = f"{train_s:.0f} s"
    registry = LocalRegistry(work / "models")
    registry.activate(version)
    manifest = registry.manifest(version)
    result: dict[str, Any] = {"size": args.size, "cpus": os.cpu_count(), "version": version,
                              "batches": args.batches}
    result["training"] = (
        f"{args.per_class} radiographs a class at {args.size} px, random init, "
        f"{args.epochs} epochs (whole network), {trained}; test balanced accuracy "
        f"{manifest.metrics.test.balanced_accuracy if manifest.metrics.test else None}")
    result["publish_check"] = manifest.int8.model_dump() if manifest.int8 else None
    print(json.dumps({"training": result["training"], "int8": result["publish_check"]}),
          flush=True)
    data = int8_data(work / "models", version, work, args.holdout_per_class)
    result["calibration"], int8_folder = calibration_methods(work / "models", version, data,
                                                             work)
    int8_file = int8_folder / "model.int8.onnx"
    result["ceiling"], forwards = ceilings(work / "models", version, int8_file,
                                           result["batches"])
    best = max((r for r in result["ceiling"] if r["runtime"] == "onnx int8"),
               key=lambda r: r["images_per_s"])

    def recheck() -> float:
        return ceiling_now(forwards["onnx int8"], best["batch"], args.size, seconds=3)

    if manifest.int8 is None or manifest.int8.file is None:
        # Its check refused the copy: serve one made with loose limits, for timing only.
        from tests.helpers.versions import republish

        assert manifest.int8 is not None
        timing = republish(registry, version, registry,
                           {"model.int8.onnx": int8_folder / "model.int8.onnx"},
                           int8=manifest.int8.model_copy(
                               update={"file": "model.int8.onnx", "error": None}))
        result["timing_version"] = f"{timing}: the INT8 copy kept for timing only"
    images = request_images(60)
    url = f"http://127.0.0.1:{args.port}"
    result["service"] = []
    for name, precision in (("auto", "auto"), ("float32", "float32")):
        env = {**service_env(work, args.port), "CXR_INFERENCE_PRECISION": precision}
        server = start([sys.executable, "-m", "cxr_cli", "serve"], env, url)
        try:
            ready = httpx.get(f"{url}/readyz").json()
            if name == "auto":
                result["served"] = (f"{ready['model_runtime']} {ready['model_precision']}, "
                                    f"batches of up to {ready['model_batch_size']}")
            result["service"] += service(url, images, args.levels, args.seconds, name,
                                         recheck)
            result["service"] += service(url, images, [4, 16], args.seconds, name, recheck,
                                         per_request=8)
        finally:
            server.terminate()
            server.wait(30)
    text = markdown(result)
    common.save(f"precision_{args.size}px", result, text, default=str)
    print(text)


if __name__ == "__main__":
    main()
