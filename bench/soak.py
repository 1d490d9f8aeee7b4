"""A soak: minutes of concurrent mixed valid and invalid requests, hot swaps in the middle.

`cxr serve`, started as users start it, with versions published by `cxr train` (small images
by default, so a 2-core CPU keeps up), takes --minutes of load from --concurrency async
clients: real radiographs to /predict, damaged and hostile uploads (truncated, random bytes,
empty, text, GIF, absurd declared dimensions, no multipart, the wrong field, over the size
limit), reads (/models, /readyz, /healthz, unknown jobs and versions) and activations without
a key. At even fractions of the run (1/3 and 2/3 by default) an admin activates the next
version in turn; with the default two versions the last swap goes back to the first, so the
first and the last minute serve the same version. The API's resident memory is sampled after
a short warm-up that the memory figures leave out (first-touch allocations of threads and
runtimes are not a leak); every request of the warm-up counts in the other checks.

Passes (exit 0) with no 5xx, no transport error, every valid prediction a 200 naming its
model version, every invalid request a 4xx with a JSON `error.code`, and the last minute's
median RSS within 10% of the first minute's. Writes JSON and Markdown under bench/results/.

    .venv/bin/python bench/soak.py        # or: make bench-soak
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import re
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import httpx
import numpy as np
from serve_benchmark import (
    activate_and_wait,
    request_images,
    rss_mb,
    service_env,
    start,
    train_versions,
)

RSS_GROWTH_LIMIT = 0.10
# uvicorn's "ERROR:    Exception in ASGI application", a traceback, or the app's own
# "2026-01-01 12:00:00,000 WARNING name: message" and worse (TensorFlow's "E0000 ..." start-up
# lines are none of the service's).
ERROR_LINE = re.compile(r"^((WARNING|ERROR|CRITICAL):|Traceback|\S+ \S+ (WARNING|ERROR|CRITICAL) )")
Send = tuple[str, str, dict[str, Any]]  # method, path, httpx keyword arguments


@dataclass(frozen=True)
class Kind:
    name: str
    weight: float
    expect: int  # the status a correct service answers; 4xx kinds need only a 4xx + error.code
    make: Callable[[random.Random], Send]


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose pixel data stops at once."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def kinds(images: list[bytes], oversized: int) -> list[Kind]:
    from PIL import Image

    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, "GIF")
    big = b"\0" * oversized

    def upload(data: bytes | Callable[[random.Random], bytes], name: str = "x.png",
               kind: str = "image/png", field: str = "file",
               path: str = "/predict") -> Callable[[random.Random], Send]:
        def make(rng: random.Random) -> Send:
            body = data(rng) if callable(data) else data
            return "POST", path, {"files": {field: (name, body, kind)}}
        return make

    def get(path: Callable[[random.Random], str]) -> Callable[[random.Random], Send]:
        return lambda rng: ("GET", path(rng), {})

    def truncated(rng: random.Random) -> bytes:
        image = rng.choice(images)
        return image[:rng.randrange(8, len(image) - 1)]

    return [
        Kind("predict", 40, 200, upload(lambda rng: rng.choice(images))),
        # Grad-CAM: a gradient pass of its own, outside the batcher, on the same model lock
        Kind("predict_explain", 3, 200, upload(lambda rng: rng.choice(images),
                                               path="/predict?explain=true")),
        Kind("truncated_png", 5, 400, upload(truncated)),
        Kind("random_bytes", 4, 400, upload(lambda rng: rng.randbytes(rng.randrange(1, 50_000)))),
        Kind("empty_file", 3, 400, upload(b"")),
        Kind("text_file", 3, 400, upload(b"not an image\n" * 40, "notes.txt", "text/plain")),
        Kind("gif", 2, 415, upload(gif.getvalue(), "x.gif", "image/gif")),
        Kind("png_100000x100000", 2, 413, upload(png_declaring(100_000, 100_000))),
        Kind("png_8000x8000", 2, 413, upload(png_declaring(8000, 8000))),
        Kind("png_6000x6000_no_pixels", 2, 400, upload(png_declaring(6000, 6000))),
        Kind("raw_png_body", 3, 422, lambda rng: ("POST", "/predict", {
            "content": rng.choice(images), "headers": {"Content-Type": "image/png"}})),
        Kind("wrong_field", 2, 422, upload(lambda rng: rng.choice(images), field="image")),
        Kind("over_size_limit", 0.3, 413, upload(big)),
        Kind("get_models", 4, 200, get(lambda rng: "/models")),
        Kind("readyz", 4, 200, get(lambda rng: "/readyz")),
        Kind("healthz", 4, 200, get(lambda rng: "/healthz")),
        Kind("unknown_job", 4, 404, get(lambda rng: f"/jobs/{rng.randbytes(16).hex()}")),
        Kind("unknown_model", 2, 404, get(lambda rng: f"/models/v{rng.randrange(10**9)}")),
        Kind("activate_without_key", 2, 401, lambda rng: ("POST", "/models/v1/activate", {})),
    ]


def contract(kind: Kind, response: httpx.Response) -> str | None:
    """Why ``response`` breaks the contract for ``kind``, or None."""
    status = response.status_code
    if kind.expect < 400:
        if status != 200:
            return f"status {status}, expected 200"
        try:
            body = response.json() if kind.name.startswith("predict") else {}
            named = not kind.name.startswith("predict") or bool(body.get("model_version"))
            if kind.name == "predict_explain":
                named = named and bool((body.get("explanation") or {}).get("overlay_png"))
        except (ValueError, AttributeError):
            named = False
        return None if named else "200 without a JSON model_version (or heat map)"
    if not 400 <= status < 500:
        return f"status {status}, expected 4xx"
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"{status} without a JSON error.code"
    return None if isinstance(code, str) and code else f"{status} with error.code {code!r}"


async def soak(url: str, pid: int, table: list[Kind], versions: list[str],
               args: argparse.Namespace) -> dict[str, Any]:
    """Drive the mix for warm-up + minutes; returns records, swaps and RSS samples."""
    seconds = args.minutes * 60
    records: list[dict[str, Any]] = []
    swaps: list[dict[str, Any]] = []
    rss: list[tuple[float, float]] = []
    weights = [k.weight for k in table]
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        began = time.monotonic() + args.warmup  # t < 0: warm-up
        end = began + seconds

        async def one_client(worker: int) -> None:
            rng = random.Random(worker)
            while time.monotonic() < end:
                kind = rng.choices(table, weights)[0]
                method, path, extra = kind.make(rng)
                started = time.monotonic()
                record = {"kind": kind.name, "t": started - began, "status": 0, "version": ""}
                try:
                    response = await client.request(method, path, **extra)
                    record.update(status=response.status_code,
                                  version=response.headers.get("x-model-version", ""),
                                  broken=contract(kind, response))
                    if record["broken"] or response.status_code != kind.expect:
                        record["body"] = response.text[:300]
                except httpx.HTTPError as exc:
                    record["broken"] = f"transport: {type(exc).__name__}: {exc}"
                record["latency"] = time.monotonic() - started
                records.append(record)

        async def swapper() -> None:
            for i in range(1, args.swaps + 1):
                target = versions[i % len(versions)]
                await asyncio.sleep(began + seconds * i / (args.swaps + 1) - time.monotonic())
                at = time.monotonic() - began
                await asyncio.to_thread(activate_and_wait, url, target)
                swaps.append({"version": target, "at_s": at,
                              "loaded_s": time.monotonic() - began - at})
                print(json.dumps({"swap": swaps[-1]}), flush=True)

        async def sampler() -> None:
            while (now := time.monotonic()) < end:
                if now >= began:
                    rss.append((now - began, rss_mb(pid)))  # after the warm-up only
                await asyncio.sleep(args.rss_every)

        await asyncio.gather(*(one_client(w) for w in range(args.concurrency)),
                             swapper(), sampler())
    return {"records": records, "swaps": swaps, "rss": rss, "seconds": seconds}


def per_kind(table: list[Kind], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for kind in table:
        mine = [r for r in records if r["kind"] == kind.name]
        latencies = np.array([r["latency"] for r in mine] or [np.nan]) * 1000
        rows.append({
            "kind": kind.name, "expect": kind.expect, "requests": len(mine),
            "statuses": dict(sorted(Counter(r["status"] for r in mine).items())),
            "5xx": sum(r["status"] >= 500 for r in mine),
            "transport_errors": sum(r["status"] == 0 for r in mine),
            "broken": sum(r["broken"] is not None for r in mine),
            "other_status": sum(r["status"] != kind.expect for r in mine),
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))})
    return rows


def phases(run: dict[str, Any], first: str, since: float) -> list[dict[str, Any]]:
    """Which version answered valid predictions between swaps; 'stale': the version before the
    swap answering a request sent after the new one had already answered."""
    bounds = [since, *(s["at_s"] for s in run["swaps"]), run["seconds"]]
    serving = [first, *(s["version"] for s in run["swaps"])]
    rows = []
    for i, version in enumerate(serving):
        mine = [r for r in run["records"] if r["kind"] == "predict" and r["status"] == 200
                and bounds[i] <= r["t"] < bounds[i + 1]]
        switched = min((r["t"] + r["latency"] for r in mine if r["version"] == version),
                       default=bounds[i + 1])
        rows.append({"from_s": bounds[i], "to_s": bounds[i + 1], "activated": version,
                     "answers": dict(Counter(r["version"] for r in mine)),
                     "stale": sum(r["t"] > switched and r["version"] != version for r in mine)})
    return rows


def memory(rss: list[tuple[float, float]], seconds: float,
           swaps: list[dict[str, Any]]) -> dict[str, Any]:
    """First against last minute (the pass/fail figure), and, apart from the one-time cost of
    a second version ever loaded, the minute before the last swap against the last minute."""
    t, mb = np.array([s[0] for s in rss]), np.array([s[1] for s in rss])
    window = min(60.0, seconds / 3)  # a minute, in a run of three or more
    first, last = float(np.median(mb[t < window])), float(np.median(mb[t >= seconds - window]))
    result = {"samples": len(rss), "first_minute_median_mb": first,
              "last_minute_median_mb": last, "max_mb": float(mb.max()),
              "growth": last / first - 1,
              "slope_mb_per_min": float(np.polyfit(t / 60, mb, 1)[0]) if len(rss) > 1 else 0.0}
    if len(swaps) >= 2:
        at = swaps[-1]["at_s"]
        before = float(np.median(mb[(t >= at - window) & (t < at)]))
        result |= {"before_last_swap_median_mb": before, "growth_across_last_swap":
                   last / before - 1}
    return result


def server_errors(log: Path) -> list[str]:
    """The API's own warnings and errors (it logs nothing below), tracebacks included."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line for line in lines if ERROR_LINE.match(line) and "absl::" not in line]


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Soak: {result['minutes']:g} min after {result['warmup_s']:g} s of warm-up, "
             f"concurrency {result['concurrency']}, {result['size']} px, versions "
             f"{', '.join(result['versions'])}: {result['requests']} requests.", "",
             "| kind | expect | requests | statuses | 5xx | transport errors | contract broken "
             "| other status | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["kinds"]:
        statuses = " ".join(f"{k}:{v}" for k, v in r["statuses"].items())
        lines.append(f"| {r['kind']} | {r['expect']} | {r['requests']} | {statuses} | {r['5xx']} "
                     f"| {r['transport_errors']} | {r['broken']} | {r['other_status']} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    lines += ["", "| from s | to s | activated | load took s | answers by version | stale |",
              "|---|---|---|---|---|---|"]
    took = [""] + [f"{s['loaded_s']:.1f}" for s in result["swaps"]]
    for phase, loaded in zip(result["phases"], took, strict=True):
        answers = ", ".join(f"{k}: {v}" for k, v in phase["answers"].items())
        lines.append(f"| {phase['from_s']:.0f} | {phase['to_s']:.0f} | {phase['activated']} | "
                     f"{loaded} | {answers} | {phase['stale']} |")
    m = result["memory"]
    lines += ["", f"API resident memory ({m['samples']} samples): first minute median "
              f"{m['first_minute_median_mb']:.0f} MB, last minute median "
              f"{m['last_minute_median_mb']:.0f} MB ({m['growth']:+.1%}), max {m['max_mb']:.0f} "
              f"MB, slope {m['slope_mb_per_min']:+.2f} MB/min."
              + (f" The minute before the last swap: {m['before_last_swap_median_mb']:.0f} MB "
                 f"(last minute {m['growth_across_last_swap']:+.1%})."
                 if "before_last_swap_median_mb" in m else ""),
              f"Warning and error lines in the API's log: {len(result['server_errors'])}.",
              "Verdict: " + ("; ".join(result["failures"]) or "PASS")]
    return "\n".join(lines)


def failures(result: dict[str, Any]) -> list[str]:
    total = {key: sum(r[key] for r in result["kinds"])
             for key in ("5xx", "transport_errors", "broken")}
    found = [f"{n} {key}" for key, n in total.items() if n]
    if result["memory"]["growth"] > RSS_GROWTH_LIMIT:
        found.append(f"RSS grew {result['memory']['growth']:.1%}")
    return found


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    common.add_size(parser, 64)
    parser.add_argument("--versions", type=int, default=2, choices=(2, 3))
    parser.add_argument("--swaps", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=20,
                        help="seconds, left out of the memory figures")
    parser.add_argument("--rss-every", type=float, default=3, help="seconds between samples")
    common.add_port(parser, 8392)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxr-soak-"))
    env = service_env(work, args.port)
    versions = train_versions(work, env, args.size, args.versions)
    from shared.registry.local import LocalRegistry

    LocalRegistry(work / "models").activate(versions[0])
    from shared.config import Settings

    table = kinds(request_images(60), Settings().max_image_bytes + 1)
    url, log = f"http://127.0.0.1:{args.port}", work / "api.log"
    server = start([sys.executable, "-m", "cxr_cli", "serve"], env, url, log)
    print(json.dumps({"work": str(work), "versions": versions, "log": str(log)}), flush=True)
    try:
        run = asyncio.run(soak(url, server.pid, table, versions, args))
    finally:
        server.terminate()
        server.wait(30)
    records = run["records"]  # the warm-up's too: only the memory figures leave it out
    result: dict[str, Any] = {
        "minutes": args.minutes, "warmup_s": args.warmup, "concurrency": args.concurrency,
        "size": args.size, "versions": versions, "log": str(log), "requests": len(records),
        "kinds": per_kind(table, records), "swaps": run["swaps"],
        "phases": phases(run, versions[0], -args.warmup),
        "memory": memory(run["rss"], run["seconds"], run["swaps"]), "rss_samples": run["rss"],
        "problems": [r for r in records if r["broken"] or r["status"] >= 500][:50],
        "server_errors": server_errors(log)[:200]}
    result["failures"] = failures(result)
    text = markdown(result)
    common.save(f"soak_{args.size}px", result, text)
    print(text)
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
