"""The cost of the prediction log and of a shadow version on POST /predict, against the same
server without them, in one run on one machine.

Three configurations of `cxr serve` on one version, the log on SQLite beside the embedded
broker (or on Redis with ``--redis``):

A. CXR_PREDICTION_LOG=false: no log, no prediction_id;
B. the log on (the default);
C. the log on, and a second version as the shadow (POST /models/{v}/shadow).

Each run is a fresh server, sent the same real films by the same async client: a warm-up,
then concurrency 1 and 16 for ``--seconds`` each. The configurations run interleaved in
rounds (A B C A B C ...), as this machine's speed drifts over minutes: figures are medians
over rounds, and a cost is the median of each round's figure against that round's A.
Targets (issue 29): p50 at concurrency 1 at most 5% higher, images/s at concurrency 16 at
most 5% lower. Then overload: B and C at concurrency 64, where the shadow must drop images
(counted) while C answers as fast as B.

Both versions are trained from random init by `cxr train` (timing does not depend on the
weights), with the ONNX export and an INT8 copy kept whatever its check says, and every
server is pinned to one runtime and precision, so that each start serves the same forward
pass. Writes bench/results/monitoring_<size>px[_redis].{json,md} and prints the table.

    .venv/bin/python bench/monitoring_benchmark.py        # or: make bench-monitoring
    .venv/bin/python bench/monitoring_benchmark.py --redis redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import httpx
import numpy as np
from serve_benchmark import (
    ADMIN,
    load,
    request_images,
    service_env,
    start,
    summarize,
    train_versions,
)

Probe = Callable[[], dict[str, Any] | None]
TARGET = 0.05  # issue 29: at most 5% slower at concurrency 1 (p50) and 16 (images/s)


@dataclass(frozen=True)
class Config:
    name: str
    title: str
    log: bool
    shadow: bool


A, B, C = (Config("A", "no log", False, False), Config("B", "log", True, False),
           Config("C", "log + shadow", True, True))


# -- one server -------------------------------------------------------------------------------
def check_log(url: str, image: bytes, logged: bool) -> None:
    """One answer, which carries a prediction_id exactly when the log is on."""
    response = httpx.post(f"{url}/predict", files=[("file", ("x.png", image))], timeout=120)
    response.raise_for_status()
    if (response.json().get("prediction_id") is not None) != logged:
        raise RuntimeError(f"prediction_id {'missing' if logged else 'present'} with the log "
                           f"{'on' if logged else 'off'}: {response.text[:300]}")


def shadow_counts(url: str, version: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/models/{version}/shadow", headers=ADMIN, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def start_shadow(url: str, version: str) -> None:
    """Make ``version`` the shadow and wait until it has loaded."""
    httpx.post(f"{url}/models/{version}/shadow", headers=ADMIN, timeout=60).raise_for_status()
    deadline = time.monotonic() + 300
    while not (counts := shadow_counts(url, version)).get("loaded"):
        if counts.get("load_error") or time.monotonic() > deadline:
            raise RuntimeError(f"shadow {version} did not load: {counts.get('load_error')}")
        time.sleep(0.5)


@contextmanager
def serving(config: Config, env: dict[str, str], url: str, shadow: str, image: bytes,
            log: Path) -> Iterator[tuple[dict[str, Any], Probe]]:
    """A fresh `cxr serve` in ``config``: what it serves, and its shadow's counts (or None)."""
    env = {**env, "CXR_PREDICTION_LOG": "true" if config.log else "false"}
    server = start([sys.executable, "-m", "cxr_cli", "serve"], env, url, log)
    try:
        ready = httpx.get(f"{url}/readyz", timeout=30).json()
        served = {key: ready.get(f"model_{key}")
                  for key in ("version", "runtime", "precision", "batch_size")}
        check_log(url, image, config.log)
        if config.shadow:
            start_shadow(url, shadow)
        yield served, (lambda: shadow_counts(url, shadow)) if config.shadow else (lambda: None)
    finally:
        if config.shadow:  # the shadow is the registry's, and would outlive this server
            httpx.delete(f"{url}/models/{shadow}/shadow", headers=ADMIN, timeout=60)
        server.terminate()
        server.wait(30)


def level(url: str, images: list[bytes], concurrency: int, seconds: float,
          probe: Probe) -> dict[str, Any]:
    """Load at one concurrency, with what the shadow saw and dropped meanwhile."""
    before = probe()
    run = asyncio.run(load(url, images, concurrency, seconds))
    row = {"concurrency": concurrency, **summarize(run["records"], run["elapsed_s"])}
    if before is not None and (after := probe()) is not None:
        row["shadow"] = {key: after.get(key, 0) - before.get(key, 0)
                         for key in ("seen", "dropped", "failed")}
        row["shadow_after"] = after
    return row


# -- the benchmark ----------------------------------------------------------------------------
def rounds(args: Any, env: dict[str, str], url: str, versions: list[str],
           images: list[bytes], logs: Path) -> list[dict[str, Any]]:
    runs = []
    for round_ in range(args.rounds):
        for config in (A, B, C):
            log = logs / f"{config.name}{round_}.log"
            with serving(config, env, url, versions[1], images[0], log) as (served, probe):
                asyncio.run(load(url, images, 4, args.warmup))
                levels = [level(url, images, c, args.seconds, probe) for c in (1, 16)]
            runs.append({"config": config.name, "round": round_, "served": served,
                         "levels": levels})
            print(json.dumps(runs[-1], default=str), flush=True)
    return runs


def overload(args: Any, env: dict[str, str], url: str, versions: list[str],
             images: list[bytes], logs: Path) -> dict[str, Any]:
    rows = {}
    for config in (B, C):
        with serving(config, env, url, versions[1], images[0],
                     logs / f"{config.name}-overload.log") as (_, probe):
            asyncio.run(load(url, images, 4, args.warmup))
            rows[config.name] = level(url, images, args.overload, args.seconds, probe)
    ratio = rows["C"]["throughput"] / rows["B"]["throughput"]
    return {"concurrency": args.overload, "B": rows["B"], "C": rows["C"],
            "throughput_ratio": ratio, "dropped": rows["C"]["shadow"]["dropped"],
            "met": rows["C"]["shadow"]["dropped"] > 0 and ratio >= 1 - TARGET}


def at(run: dict[str, Any], concurrency: int) -> dict[str, Any]:
    return next(row for row in run["levels"] if row["concurrency"] == concurrency)


def figure(concurrency: int, *keys: str) -> Callable[[dict[str, Any]], float]:
    """A run's figure at one concurrency, as ``at(run, 16)["shadow"]["seen"]``."""
    def read(run: dict[str, Any]) -> float:
        value: Any = at(run, concurrency)
        for key in keys:
            value = value[key]
        return float(value)
    return read


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each configuration's medians over rounds, and its costs against A in the same round."""
    base = {run["round"]: run for run in runs if run["config"] == "A"}
    rows = []
    for config in (A, B, C):
        mine = [run for run in runs if run["config"] == config.name]

        def median(figure: Callable[[dict[str, Any]], float], runs: Any = mine) -> float:
            return float(np.median([figure(run) for run in runs]))

        # Each start measures its runtime's best batch anew: unequal limits weigh on a cost.
        row = {"config": config.name, "title": config.title, "rounds": len(mine),
               "batch_limits": [run["served"]["batch_size"] for run in mine],
               "errors": sum(one["errors"] for run in mine for one in run["levels"])}
        for c, figures in ((1, ("p50_ms", "p95_ms", "throughput")),
                           (16, ("throughput", "p50_ms", "p99_ms"))):
            row |= {f"c{c}_{f}": median(figure(c, f)) for f in figures}
            if config.shadow:
                row |= {f"c{c}_shadow_{k}": median(figure(c, "shadow", k))
                        for k in ("seen", "dropped", "failed")}
        row["c1_p50_cost"] = median(
            lambda run: at(run, 1)["p50_ms"] / at(base[run["round"]], 1)["p50_ms"] - 1)
        row["c16_throughput_cost"] = median(
            lambda run: at(run, 16)["throughput"] / at(base[run["round"]], 16)["throughput"] - 1)
        row["met"] = row["c1_p50_cost"] <= TARGET and row["c16_throughput_cost"] >= -TARGET
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['size']} px, log on {result['store']}, {result['rounds']} rounds of "
             f"{result['seconds']:g} s per level, {result['cpus']} CPU cores; served: "
             f"{'; '.join(result['served'])}.", "",
             "| configuration | c=1 p50 ms | c=1 p95 ms | c=1 images/s | c=16 images/s | "
             "c=16 p99 ms | shadow seen/dropped c=1; c=16 | c=1 p50 vs A | c=16 images/s vs A "
             "| batch limit by round | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["summary"]:
        shadow = (f"{r['c1_shadow_seen']:.0f}/{r['c1_shadow_dropped']:.0f}; "
                  f"{r['c16_shadow_seen']:.0f}/{r['c16_shadow_dropped']:.0f}"
                  if "c1_shadow_seen" in r else "-")
        costs = ("-", "-") if r["config"] == A.name else (
            f"{r['c1_p50_cost']:+.1%}", f"{r['c16_throughput_cost']:+.1%}")
        lines.append(f"| {r['config']}: {r['title']} | {r['c1_p50_ms']:.0f} | "
                     f"{r['c1_p95_ms']:.0f} | {r['c1_throughput']:.2f} | "
                     f"{r['c16_throughput']:.2f} | {r['c16_p99_ms']:.0f} | {shadow} | "
                     f"{costs[0]} | {costs[1]} | {', '.join(map(str, r['batch_limits']))} | "
                     f"{r['errors']} |")
    lines += ["", f"Targets (p50 at c=1 at most {TARGET:.0%} higher, images/s at c=16 at most "
              f"{TARGET:.0%} lower than A): " + ", ".join(
                  f"{r['config']} {'met' if r['met'] else 'MISSED'}"
                  for r in result["summary"][1:]) + "."]
    if (over := result.get("overload")) is not None:
        lines.append(
            f"Overload at c={over['concurrency']}: C {over['C']['throughput']:.2f} images/s "
            f"against B {over['B']['throughput']:.2f} ({over['throughput_ratio']:.0%}), p99 "
            f"{over['C']['p99_ms']:.0f} against {over['B']['p99_ms']:.0f} ms; the shadow saw "
            f"{over['C']['shadow']['seen']} and dropped {over['dropped']}: "
            f"{'met' if over['met'] else 'MISSED'}.")
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__)
    common.add_size(parser, 224)
    common.add_port(parser, 8395)
    parser.add_argument("--seconds", type=float, default=20,
                        help="seconds of load at each concurrency (default 20)")
    parser.add_argument("--warmup", type=float, default=5,
                        help="seconds of load before measuring, on each start (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of A B C (default 2)")
    parser.add_argument("--overload", type=int, default=64,
                        help="concurrency of the overload phase; 0 skips it (default 64)")
    parser.add_argument("--precision", choices=("int8", "float32"), default="int8",
                        help="the one precision every server uses (default int8)")
    parser.add_argument("--redis", metavar="URL",
                        help="put the log on this Redis (CXR_BROKER_URL); none is started")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxr-monitoring-bench-"))
    env = service_env(work, args.port) | {
        # A copy kept whatever its check says: a random-init version's would be refused.
        "CXR_INT8_MIN_AGREEMENT": "0", "CXR_INT8_MAX_BALANCED_ACCURACY_DROP": "1",
        "CXR_INFERENCE_RUNTIME": "onnx", "CXR_INFERENCE_PRECISION": args.precision}
    if args.redis:  # for A too, so that the log is all that differs
        env["CXR_BROKER_URL"] = args.redis
    versions = train_versions(work, env, args.size, 2)
    from shared.registry.local import LocalRegistry

    LocalRegistry(work / "models").activate(versions[0])
    images = request_images(60)
    url = f"http://127.0.0.1:{args.port}"
    result: dict[str, Any] = {
        "size": args.size, "cpus": os.cpu_count(), "seconds": args.seconds,
        "rounds": args.rounds, "store": "Redis" if args.redis else "SQLite (embedded broker)",
        "served_version": versions[0], "shadow_version": versions[1]}
    result["runs"] = rounds(args, env, url, versions, images, work)
    result["served"] = sorted({f"{run['served']['runtime']} {run['served']['precision']}, "
                               f"batches of up to {run['served']['batch_size']}"
                               for run in result["runs"]})
    result["summary"] = summary(result["runs"])
    if args.overload:
        result["overload"] = overload(args, env, url, versions, images, work)
        print(json.dumps(result["overload"]), flush=True)
    text = markdown(result)
    common.save(f"monitoring_{args.size}px" + ("_redis" if args.redis else ""), result, text,
                default=str)
    print(text)


if __name__ == "__main__":
    main()
