"""/predict at the machine's limit: the model's ceiling, the service, a naive peer, a hot swap
under load, and memory across reloads, in one run on one machine.

1. ceiling: the version's forward pass called directly, TensorFlow graph and ONNX Runtime, at
   batch sizes 1 to 64, and the machine's float32 GEMM rate;
2. service: `cxr serve`, as users start it, over HTTP with an async client at concurrency 1, 4,
   16 and 64: throughput, p50/p95/p99 latency, errors;
3. naive peer: bench/naive_server.py (one `model.predict` per request), same model and client;
4. hot swap: at concurrency 16, another version activated mid-run;
5. memory: the API's resident memory with one model loaded and after 20 hot reloads.

Versions are trained from random init (timing does not depend on the weights) and published by
`cxr train`, so they carry everything a real version does (ONNX export, shift reference).
Writes JSON, Markdown and a plot under bench/results/ and prints the table.

    .venv/bin/python bench/serve_benchmark.py        # or: make bench-serve
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import common
import httpx
import numpy as np
from common import CLASSES, RADIOGRAPHY, REPO, RESULTS

# An admin key of this run's own, for activating versions (CXR_API_KEYS below).
BENCH_KEY = secrets.token_urlsafe(24)
ADMIN = {"X-API-Key": BENCH_KEY}
VGG16_GFLOP_224 = 30.7  # multiply-adds x2 of the convolutional base at 224x224


# -- setup ------------------------------------------------------------------------------------
def service_env(work: Path, port: int) -> dict[str, str]:
    """The CXR_ environment of a service of its own under ``work``, with this run's admin key."""
    from shared.config import key_digest

    return {**os.environ, "CXR_MODELS_DIR": str(work / "models"),
            "CXR_STATE_DIR": str(work / "state"), "CXR_DATA_DIR": str(work / "data"),
            "CXR_PORT": str(port), "CXR_LOG_LEVEL": "warning", "TF_CPP_MIN_LOG_LEVEL": "2",
            # Float, as the ceilings here are; bench/precision_benchmark.py measures INT8.
            "CXR_INFERENCE_PRECISION": "float32",
            "CXR_API_KEYS": json.dumps([{"name": "bench", "role": "admin",
                                         "sha256": key_digest(BENCH_KEY)}])}


def train_versions(work: Path, env: dict[str, str], size: int, n: int) -> list[str]:
    tiny = work / "tiny"
    for label in CLASSES:
        (tiny / label).mkdir(parents=True, exist_ok=True)
        for path in sorted((RADIOGRAPHY / label / "images").iterdir())[:8]:
            (tiny / label / path.name).write_bytes(path.read_bytes())
    for seed in range(n):
        subprocess.run([sys.executable, "-m", "cxr_cli", "train", "--data", str(tiny),
                        "--epochs", "1", "--no-fine-tune", "--image-size", str(size),
                        "--base-weights", "none", "--batch-size", "8", "--seed", str(seed)],
                       cwd=REPO, env=env, check=True, capture_output=True)
    from shared.registry.local import LocalRegistry

    return [m.version for m in LocalRegistry(work / "models").versions()][::-1]


def request_images(count: int) -> list[bytes]:
    paths = [p for label in CLASSES
             for p in sorted((RADIOGRAPHY / label / "images").iterdir())[100:100 + count // 3 + 1]]
    return [p.read_bytes() for p in paths[:count]]


def start(command: list[str], env: dict[str, str], url: str,
          log: Path | None = None, cwd: Path = REPO) -> subprocess.Popen[bytes]:
    """Start a server (in ``cwd``: another checkout's, say) and wait until /readyz answers
    200; its output goes to ``log``, if any."""
    output = log.open("ab") if log is not None else None
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output or subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    if output is not None:
        output.close()  # the child holds its own copy
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{command} did not become ready" + (f"; see {log}" if log else ""))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# -- 1. ceiling -------------------------------------------------------------------------------
def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def ceiling(models_dir: Path, version: str,
            batches: list[int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of (runtime, batch, images/s, latency), and each runtime's forward pass."""
    from shared.loading import load_version
    from shared.ml.preprocessing import to_model_input
    from shared.ml.runtimes import compiled_forward
    from shared.registry.local import LocalRegistry

    registry = LocalRegistry(models_dir)
    rows, forwards = [], {}
    for runtime in ("tensorflow", "onnx", "tensorflow+xla"):
        loaded = load_version(registry, version, runtime=runtime.split("+")[0],  # type: ignore[arg-type]
                              precision="float32")
        if runtime == "tensorflow+xla":
            loaded = replace(loaded, forward=compiled_forward(
                loaded.model, loaded.image_size, loaded.shift is not None, xla=True))
        forwards[runtime] = loaded.forward
        size = loaded.image_size
        for batch in batches:
            x = to_model_input(np.random.default_rng(batch).uniform(
                0, 255, (batch, size, size, 3)).astype(np.float32))
            loaded.forward(x)
            repeats = max(2, 16 // batch)
            rows.append(timed(runtime, loaded.forward, x, repeats))
    return rows, forwards


def timed(name: str, forward: Any, x: np.ndarray, repeats: int) -> dict[str, Any]:
    """The median of ``repeats`` passes over the batch ``x`` (after one), printed."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - started)
    seconds = float(np.median(times))
    row = {"runtime": name, "batch": len(x), "images_per_s": len(x) / seconds,
           "latency_ms": 1000 * seconds}
    print(json.dumps(row), flush=True)
    return row


def ceiling_now(forward: Any, batch: int, size: int, seconds: float = 5) -> float:
    """Images/s of the fastest runtime at its best batch, measured again now. This machine's
    speed drifts by tens of percent over minutes (shared cores): each load level is compared
    with a ceiling measured just before it, not only with the one measured at the start."""
    from shared.ml.preprocessing import to_model_input

    x = to_model_input(np.random.default_rng(0).uniform(
        0, 255, (batch, size, size, 3)).astype(np.float32))
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < 2 or time.perf_counter() - began < seconds:
        started = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - started)
    return batch / float(np.median(times))


# -- 2-4. load over HTTP ----------------------------------------------------------------------
async def load(url: str, images: list[bytes], concurrency: int, seconds: float,
               at: float | None = None, action: Any = None,
               per_request: int = 1) -> dict[str, Any]:
    """Send requests of ``per_request`` images from ``concurrency`` clients for ``seconds``;
    optionally run ``action`` ``at`` seconds in. Returns every request's (start, latency,
    status, version)."""
    records: list[tuple[float, float, int, str]] = []
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        began = time.monotonic()

        async def one_client(worker: int) -> None:
            i = worker
            while time.monotonic() - began < seconds:
                started = time.monotonic()
                try:
                    files = [("file", (f"{k}.png", images[(i + k) % len(images)]))
                             for k in range(per_request)]
                    response = await client.post("/predict", files=files)
                    status = response.status_code
                    version = response.headers.get("x-model-version", "")
                except httpx.HTTPError:
                    status, version = 0, ""
                records.append((started - began, time.monotonic() - started, status, version))
                i += concurrency

        async def trigger() -> None:
            await asyncio.sleep(at or 0)
            await asyncio.to_thread(action)

        tasks = [one_client(w) for w in range(concurrency)]
        if action is not None:
            tasks.append(trigger())
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - began
    return {"records": records, "elapsed_s": elapsed}


def summarize(records: list[tuple[float, float, int, str]], elapsed: float,
              per_request: int = 1) -> dict[str, Any]:
    """Requests, errors, images/s and request latency percentiles."""
    ok = [r[1] for r in records if r[2] == 200]
    latencies = np.array(ok) * 1000 if ok else np.array([np.nan])
    return {"requests": len(records), "errors": len(records) - len(ok),
            "throughput": len(ok) * per_request / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p95_ms": float(np.percentile(latencies, 95)),
            "p99_ms": float(np.percentile(latencies, 99))}


def sweep(url: str, images: list[bytes], levels: list[int], seconds: float,
          name: str, recheck: Any) -> list[dict[str, Any]]:
    rows = []
    asyncio.run(load(url, images, 4, 5))  # warm the connection path
    for concurrency in levels:
        now = recheck()  # the server is idle meanwhile
        run = asyncio.run(load(url, images, concurrency, seconds))
        rows.append({"server": name, "concurrency": concurrency, "ceiling_now": now,
                     **summarize(run["records"], run["elapsed_s"])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def hot_swap(url: str, images: list[bytes], target: str, seconds: float) -> dict[str, Any]:
    at = seconds / 3

    def activate() -> None:
        httpx.post(f"{url}/models/{target}/activate", timeout=60, headers=ADMIN,
                   params={"force": "true"}).raise_for_status()

    run = asyncio.run(load(url, images, 16, seconds, at=at, action=activate))
    records = run["records"]
    switched = min((r[0] for r in records if r[3] == target), default=seconds)
    steady = [r for r in records if r[0] < at]
    during = [r for r in records if at <= r[0] <= switched + 2]
    return {"activated_at_s": at, "first_answer_of_new_version_s": switched,
            "failed": sum(r[2] != 200 for r in records), "requests": len(records),
            "steady": summarize(steady, at), "during_swap": summarize(during, switched + 2 - at),
            "versions_seen": sorted({r[3] for r in records})}


def activate_and_wait(url: str, version: str) -> None:
    """Activate ``version`` with the admin key and wait until the service serves it."""
    # benchmark versions are not proven better than chance: serving them needs the confirmation
    httpx.post(f"{url}/models/{version}/activate", timeout=60, headers=ADMIN,
               params={"force": "true"}).raise_for_status()
    deadline = time.monotonic() + 300
    while httpx.get(f"{url}/readyz", timeout=10).json().get("model_version") != version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{version} was not loaded")
        time.sleep(0.2)


def reload_memory(url: str, pid: int, versions: list[str], reloads: int) -> dict[str, Any]:
    activate_and_wait(url, versions[0])
    first = rss_mb(pid)
    for i in range(reloads):
        activate_and_wait(url, versions[(i + 1) % len(versions)])
    after = rss_mb(pid)
    return {"rss_mb_one_model": first, "reloads": reloads, "rss_mb_after_reloads": after,
            "growth": after / first - 1}


# -- report -----------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    best = {rt: max((r for r in result["ceiling"] if r["runtime"] == rt),
                    key=lambda r: r["images_per_s"])
            for rt in ("tensorflow", "onnx", "tensorflow+xla")}
    single = {r["runtime"]: r["latency_ms"] for r in result["ceiling"] if r["batch"] == 1}
    lines = ["| runtime | best images/s (batch) | batch-1 latency ms | share of GEMM peak |",
             "|---|---|---|---|"]
    for rt, row in best.items():
        share = row["images_per_s"] * VGG16_GFLOP_224 / result["gemm_gflops"]
        lines.append(f"| {rt} | {row['images_per_s']:.2f} ({row['batch']}) | "
                     f"{single[rt]:.0f} | {share:.0%} |")
    lines += ["", "| server | concurrency | images/s | ceiling just before | share | p50 ms | "
              "p95 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["service"] + result["naive"]:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['throughput']:.2f} | "
                     f"{r['ceiling_now']:.2f} | {r['throughput'] / r['ceiling_now']:.0%} | "
                     f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['errors']} |")
    swap, memory = result["hot_swap"], result["memory"]
    ceiling = max(row["images_per_s"] for row in best.values())
    at16 = {r["server"]: r["throughput"] for r in result["service"] + result["naive"]
            if r["concurrency"] == 16}
    now16 = next(r["ceiling_now"] for r in result["service"] if r["concurrency"] == 16)
    c1 = next(r for r in result["service"] if r["concurrency"] == 1)
    lines += [
        "",
        f"GEMM: {result['gemm_gflops']:.0f} GFLOP/s float32 (numpy, 2048x2048).",
        f"Service at concurrency 16: {at16['service']:.2f} images/s = "
        f"{at16['service'] / ceiling:.0%} of the fastest ceiling at the start, "
        f"{at16['service'] / now16:.0%} of it measured just before, "
        f"{at16['service'] / at16['naive']:.2f}x the naive peer.",
        f"Concurrency 1: p50 {c1['p50_ms']:.0f} ms against a batch-1 pass of "
        f"{min(single.values()):.0f} ms (+{c1['p50_ms'] - min(single.values()):.0f} ms).",
        f"Hot swap at concurrency 16: {swap['failed']} failed of {swap['requests']}; p99 "
        f"{swap['during_swap']['p99_ms']:.0f} ms during the swap against "
        f"{swap['steady']['p99_ms']:.0f} ms steady.",
        f"Memory: {memory['rss_mb_one_model']:.0f} MB with one model, "
        f"{memory['rss_mb_after_reloads']:.0f} MB after {memory['reloads']} hot reloads "
        f"({memory['growth']:+.1%}).",
        f"Chosen by the service as it loaded the version: {result['served_runtime']}, "
        f"batches of up to {result['served_batch_size']}.",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for name, rows in (("service", result["service"]), ("naive", result["naive"])):
        levels = [r["concurrency"] for r in rows]
        left.plot(levels, [r["throughput"] for r in rows], marker="o", label=name)
        right.plot(levels, [r["p95_ms"] for r in rows], marker="o", label=name)
    for rt, color in (("tensorflow", "grey"), ("onnx", "black"), ("tensorflow+xla", "tan")):
        best = max(r["images_per_s"] for r in result["ceiling"] if r["runtime"] == rt)
        left.axhline(best, linestyle="--", color=color, label=f"ceiling {rt}")
    for ax, label in ((left, "images/s"), (right, "p95 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"/predict at {result['size']} px, {os.cpu_count()} CPU cores")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = common.parser(__doc__)
    common.add_size(parser, 224)
    common.add_load(parser, seconds=20, batches="1,2,4,8,16,32,64")
    parser.add_argument("--reloads", type=int, default=20)
    common.add_port(parser, 8391)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxr-serve-bench-"))
    env = service_env(work, args.port)
    versions = train_versions(work, env, args.size, 2)
    from shared.registry.local import LocalRegistry

    LocalRegistry(work / "models").activate(versions[0])
    images = request_images(60)
    result: dict[str, Any] = {"size": args.size, "cpus": os.cpu_count(),
                              "gemm_gflops": gemm_gflops()}
    result["ceiling"], forwards = ceiling(work / "models", versions[0], args.batches)
    fastest = max(result["ceiling"], key=lambda r: r["images_per_s"])
    result["recheck"] = {"runtime": fastest["runtime"], "batch": fastest["batch"]}

    def recheck() -> float:
        return ceiling_now(forwards[fastest["runtime"]], fastest["batch"], args.size)

    url = f"http://127.0.0.1:{args.port}"
    server = start([sys.executable, "-m", "cxr_cli", "serve"], env, url)
    try:
        ready = httpx.get(f"{url}/readyz").json()
        result["served_runtime"] = ready.get("model_runtime")
        result["served_batch_size"] = ready.get("model_batch_size")
        result["service"] = sweep(url, images, args.levels, args.seconds, "service", recheck)
        result["hot_swap"] = hot_swap(url, images, versions[1], args.seconds * 1.5)
        print(json.dumps(result["hot_swap"]), flush=True)
        result["memory"] = reload_memory(url, server.pid, versions, args.reloads)
        print(json.dumps(result["memory"]), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    naive_url = f"http://127.0.0.1:{args.port + 1}"
    naive = start([sys.executable, "bench/naive_server.py",
                   str(work / "models" / versions[0]), str(args.port + 1)], env, naive_url)
    try:
        result["naive"] = sweep(naive_url, images, args.levels, args.seconds, "naive", recheck)
    finally:
        naive.terminate()
        naive.wait(30)
    stem, text = f"serve_{args.size}px", markdown(result)
    common.save(stem, result, text)
    plot(result, RESULTS / f"{stem}.png")
    print(text)


if __name__ == "__main__":
    main()
