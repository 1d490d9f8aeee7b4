"""What hostile requests cost everyone else: the memory they take and the stall they put on
other requests.

round2 (the default): `cxr serve` (a random-weight version, 32 px, activated; recorded as every
new version is, so large images are decoded at reduced size, unless --full-decode), as users
start it. A prober sends GET /healthz every 20 ms throughout; the figures are the largest
latency while a huge header and a huge keyless JSON body are in flight, against the largest at
rest, and the API's peak memory under concurrent large-declared images.

    .venv/bin/python bench/hostile_inputs.py [round2] [--header-mb 128] [--json-mb 300]
        [--images 8] [--format PNG|JPEG] [--full-decode]

round3 (issue 27, items 1-5): any checkout's API (`--checkout DIR`, say an older commit in a
worktree), started with uvicorn afresh for each run below so that its memory figures are that
run's alone, on one registry of four random-weight versions (the first active). Two probers
run throughout: GET /healthz every 20 ms and a /predict of one real film every 200 ms. The
figures: the hostile requests' statuses and the seconds until all were answered; the server's
VmRSS before them, its peak (VmHWM, reset as they are sent) while in flight and its VmRSS 5 s
after; each prober's worst latency while they are in flight against the 2 s before. A run not
answered in 120 s, or whose server outgrows --max-rss-gb, is stopped (the server killed).

    .venv/bin/python bench/hostile_inputs.py round3 [--checkout DIR] [--cases oip_json,aspect]

Prints a table and writes bench/results/hostile_inputs_<format>_<decode>.json (round2) or
bench/results/hostile_round3_<checkout name>.json (round3).

The hostile bodies are built in bench/hostile_bodies.py, and measured with
bench/probing.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import common
import httpx
from hostile_bodies import BODY_BYTES, RUNS, Fixture, Run, encoded
from PIL import Image
from probing import (
    MiB,
    Prober,
    available_mb,
    counts,
    free_port,
    hostile,
    memory_mb,
    peak_rss_mb,
    raw_send,
    small_predict,
    start_api,
)
from serve_benchmark import service_env, start

REST_S, AFTER_S = 2.0, 5.0


# -- round 2: a huge header, a huge keyless body, large-declared images --------------------------
def round2(args: argparse.Namespace) -> None:
    from shared.ml.preprocessing import PreprocessOptions, preprocessing_id
    from shared.registry.local import LocalRegistry
    from tests.helpers.versions import publish_random

    work = Path(tempfile.mkdtemp(prefix="cxr-hostile-"))
    registry = LocalRegistry(work / "models")
    options = PreprocessOptions(reduce_large=not args.full_decode)
    registry.activate(publish_random(registry, seed=1, extra={
        "preprocessing": preprocessing_id(options), "preprocessing_options": options.as_dict()}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start([sys.executable, "-m", "cxr_cli", "serve"], service_env(work, port), url,
                   work / "serve.log")
    prober = Prober(url)
    prober.start()
    figures: dict[str, Any] = {}
    try:
        time.sleep(2)
        figures["healthz_worst_ms_at_rest"] = prober.worst(0, time.monotonic())
        host = f"127.0.0.1:{port}".encode()
        for name, head, body in (
            ("header", b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nX-Pad: ", 0),
            ("json", b"POST /retrain HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: "
             b"application/json\r\nContent-Length: " + str(args.json_mb * MiB).encode()
             + b"\r\n\r\n", args.json_mb * MiB),
        ):
            started = time.monotonic()
            if name == "header":  # the header's value is the payload: never terminated
                seconds = raw_send(port, head, args.header_mb * MiB, fill=b"a")
            else:
                seconds = raw_send(port, head, body)
            time.sleep(0.5)
            figures[f"{name}_seconds"] = round(seconds, 2)
            figures[f"healthz_worst_ms_during_{name}"] = round(
                prober.worst(started, time.monotonic()), 1)
        image = encoded(Image.new("L", (args.side, args.side), 90), args.format)
        figures["decode"] = "full" if args.full_decode else "reduced"
        figures["image_format"] = args.format
        figures["image_kb"] = round(len(image) / 1024, 1)
        figures["rss_peak_mb_before_images"] = round(peak_rss_mb(server.pid), 0)
        with httpx.Client(timeout=600) as client, ThreadPoolExecutor(args.images) as pool:
            statuses = list(pool.map(lambda _: client.post(
                f"{url}/predict", files={"file": ("big.png", image)}).status_code,
                range(args.images)))
        figures["rss_peak_mb_after_images"] = round(peak_rss_mb(server.pid), 0)
        figures["image_statuses"] = statuses
    finally:
        prober.stop.set()
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(figures, indent=1))
    common.save(f"hostile_inputs_{args.format.lower()}_{figures['decode']}", figures, indent=1)


# -- round 3: measuring a run on an API of its own ----------------------------------------------
def measure(run: Run, fixture: Fixture, checkout: Path, work: Path,
            max_rss_mb: float) -> dict[str, Any]:
    """One run on an API started for it alone, with both probers running throughout."""
    requests = run.build(fixture)  # built first, so the server never waits on it
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**service_env(work, port), "CXR_STATE_DIR": str(work / "state" / run.name)}
    server = start_api(checkout, env, port, work / f"{run.case}-{run.name}.log")
    probers = [Prober(url), Prober(url, small_predict(fixture.film), every=0.2)]
    try:
        for _ in range(2):  # the first predictions warm the answering path
            httpx.post(f"{url}/predict", files={"file": ("film.png", fixture.film)}, timeout=120)
        for prober in probers:
            prober.start()
        time.sleep(REST_S)
        before = memory_mb(server.pid, "VmRSS")
        started = time.monotonic()
        sent = hostile(requests, url, server.pid, max_rss_mb, server)
        time.sleep(AFTER_S)
        after = memory_mb(server.pid, "VmRSS")
    finally:
        for prober in probers:
            prober.stop.set()
        server.kill()
        server.wait(timeout=30)
    end = sent["answered_at"]
    health, predictions = probers
    return {
        "case": run.case, "run": run.name, "requests": len(requests),
        "body_mb": round(requests[0].body_bytes() / MiB, 2), "outcome": sent["outcome"],
        "statuses": sent["statuses"], "answered_s": round(end - started, 2),
        "rss_before_mb": round(before or 0), "hwm_during_mb": round(sent["peak_mb"] or 0),
        "hwm_reset": sent["peak_reset"], "rss_after_mb": after and round(after),
        "healthz_worst_ms_rest": round(health.worst(started - REST_S, started)),
        "healthz_worst_ms_during": round(health.worst(started, end)),
        "predict_worst_ms_rest": round(predictions.worst(started - REST_S, started)),
        "predict_worst_ms_during": round(predictions.worst(started, end)),
        "predict_statuses": counts([s[2] for s in predictions.during(started, end)])}


def publish_fixture(models: Path) -> Fixture:
    """Four random-weight versions (the first active), recorded as new versions are, so large
    images are decoded at reduced size; and a real film."""
    from shared.ml.preprocessing import PreprocessOptions, preprocessing_id
    from shared.registry.local import LocalRegistry
    from tests.helpers.versions import publish_random

    registry = LocalRegistry(models)
    options = PreprocessOptions(reduce_large=True)
    extra = {"preprocessing": preprocessing_id(options),
             "preprocessing_options": options.as_dict()}
    versions = [publish_random(registry, seed=seed, extra=extra) for seed in range(1, 5)]
    registry.activate(versions[0])
    film = sorted((common.RADIOGRAPHY / "Normal" / "images").iterdir())[0].read_bytes()
    return Fixture(film, versions)


def described(checkout: Path) -> str:
    """The checkout's commit, '+changes' when its tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True,
                              text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain")
                                                  else "")


def table(rows: list[dict[str, Any]]) -> str:
    columns = ("case", "run", "requests", "statuses", "answered_s", "rss_before_mb",
               "hwm_during_mb", "rss_after_mb", "healthz_worst_ms_rest",
               "healthz_worst_ms_during", "predict_worst_ms_rest", "predict_worst_ms_during",
               "predict_statuses", "outcome")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (json.dumps(v) if isinstance(v, dict) else str(v)
                 for v in (row[c] for c in columns))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def round3(args: argparse.Namespace) -> None:
    checkout = args.checkout.resolve()
    unknown = set(args.cases) - {run.case for run in RUNS}
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; known: "
                         f"{sorted({run.case for run in RUNS})}")
    work = Path(tempfile.mkdtemp(prefix="cxr-hostile3-"))
    fixture = publish_fixture(work / "models")
    rows = []
    for run in (r for r in RUNS if r.case in args.cases):
        rows.append(measure(run, fixture, checkout, work, args.max_rss_gb * 1024))
        print(json.dumps(rows[-1]), flush=True)
    markdown = table(rows)
    print(markdown)
    common.save(f"hostile_round3_{checkout.name}", {
        "checkout": str(checkout), "commit": described(checkout), "cpus": os.cpu_count(),
        "memory_mb": round(available_mb()), "body_bytes": BODY_BYTES, "runs": rows}, indent=1)


def main() -> None:
    parser = common.parser(__doc__)
    rounds = parser.add_subparsers(dest="round")
    two = rounds.add_parser("round2", help="a huge header and body, large-declared images")
    two.add_argument("--header-mb", type=int, default=128)
    two.add_argument("--json-mb", type=int, default=300)
    two.add_argument("--images", type=int, default=8)
    two.add_argument("--side", type=int, default=7000)
    two.add_argument("--format", choices=["PNG", "JPEG"], default="PNG")
    two.add_argument("--full-decode", action="store_true",
                     help="serve a version recorded before reduced decoding")
    three = rounds.add_parser("round3", help="issue 27's bodies, each on a fresh API")
    three.add_argument("--checkout", type=Path, default=common.REPO,
                       help="the checkout whose API is measured (default: this one)")
    three.add_argument("--cases", type=lambda text: text.split(","),
                       default=sorted({run.case for run in RUNS}),
                       help="comma-separated, of: " + ", ".join(dict.fromkeys(
                           run.case for run in RUNS)) + " (default: all)")
    three.add_argument("--max-rss-gb", type=float, default=14.0,
                       help="stop a run whose server grows past this (default 14)")
    argv = sys.argv[1:]
    if not argv or argv[0] not in ("round2", "round3", "-h", "--help"):
        argv = ["round2", *argv]  # the round-2 command line, as it always was
    args = parser.parse_args(argv)
    (round3 if args.round == "round3" else round2)(args)


if __name__ == "__main__":
    main()
