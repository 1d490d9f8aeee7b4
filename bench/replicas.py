"""Many API replicas, one registry on object storage (issue 7): publish, first serve, hot swaps.

One S3 bucket (moto's S3 server on a loopback port) holds the registry; two `cxr serve`
processes, started as users start them (CXR_MODELS_URI, CXR_S3_ENDPOINT_URL, a Redis broker on
db 14, JSON logs, the default 2 s reload poll), each keep their own verified model cache in a
state folder of their own. Versions are the service's VGG16 classifier at the real image size
(224 px) with random weights, published straight through ``ObjectStoreRegistry`` (no training:
timing does not depend on the weights; they carry no ONNX export and no shift reference).

1. publish: the model file's size, the wall time of ``publish`` (sha256, upload, manifest),
   and ``verified_model_path`` in this process, cold (manifest, download, sha256) and warm
   (a cache hit: sha256 only);
2. first serve: version 1 activated in the registry; each API's time until /readyz names it;
3. hot swaps under light load (one thread per API posting real radiographs to /predict in a
   loop, concurrency 1 each): versions 2, 3, 1, 3 activated in turn. For each activation and
   API: when it started loading (its "loading model version" log line), how long loading took
   ("now serving ... after loading for N s"), when its answers first carried the new
   X-Model-Version, whether the version was in its cache, every non-200 answer and transport
   error, any answer whose X-Model-Version differs from its body's model_version, and any
   answer from an older version once the new one had answered (stale).

Activations go to the registry from this process, as another replica or a worker would make
them, so both APIs learn of them only by polling: up to one reload interval (2 s) of delay.
An API keeps the version it serves and the one before in its cache, so the swap back to 1
(after 2 and 3) downloads it again; the last swap, back to 3, is a cache hit.

Caveats: moto is an in-memory S3 written in Python, not AWS or MinIO: its transfer figures are
loopback figures of one Python process, not a network's. The two APIs share this machine's
cores (2 here) with each other, with moto and with this client, so a load slows the other
API's answers and loads; the figures are of that, not of replicas on hosts of their own.

Passes (exit 0) with no non-200 answer, no transport error, no header/body mismatch and no
stale answer. Writes JSON to bench/results/replicas.json.

    .venv/bin/python bench/replicas.py        # or: make bench-replicas
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import httpx
import numpy as np
from common import CLASSES, REPO
from serve_benchmark import request_images

S3_ENV = {"AWS_ACCESS_KEY_ID": "cxr-bench", "AWS_SECRET_ACCESS_KEY": "cxr-bench-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}
REDIS_URL = "redis://127.0.0.1:6379/14"  # db 15 is the test suite's
BUCKET = "cxr-replicas"
LOADING = re.compile(r"^loading model version (\S+)$")
SERVING = re.compile(r"^now serving model version (\S+) \((\S+)\) after loading for ([\d.]+) s$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_moto(work: Path, processes: list[subprocess.Popen[bytes]]) -> str:
    """moto's S3 server on a free loopback port, with the bucket made; its endpoint URL."""
    import boto3

    port = free_port()
    with (work / "moto.log").open("ab") as log:
        processes.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            return endpoint
        except Exception:
            if processes[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)


# -- 1. publish -------------------------------------------------------------------------------
def publish(registry: Any, size: int, count: int) -> tuple[list[str], list[dict[str, Any]]]:
    """``count`` random-weight versions, published without activating; their figures."""
    import keras

    from shared.checksums import sha256_file
    from shared.manifest import DatasetRecord, ManifestDraft
    from shared.ml.modeling import ModelConfig, build_model
    from shared.registry.files import MODEL_FILE

    versions, rows = [], []
    for seed in range(1, count + 1):
        keras.utils.set_random_seed(seed)
        staging = registry.new_staging()
        started = time.perf_counter()
        build_model(ModelConfig(num_classes=len(CLASSES), image_size=size)).save(
            staging / MODEL_FILE)
        saved = time.perf_counter()
        sha256_file(staging / MODEL_FILE)
        hashed = time.perf_counter()
        manifest = ManifestDraft(created_at=datetime.now(UTC), classes=list(CLASSES),
                                 image_size=size, dataset=DatasetRecord(name="random-init"))
        version = registry.publish(staging, manifest, activate=False)
        done = time.perf_counter()
        rows.append({"version": version, "bytes": (staging / MODEL_FILE).stat().st_size,
                     "build_save_s": saved - started, "sha256_s": hashed - saved,
                     "publish_s": done - hashed})
        registry.discard(staging)
        versions.append(version)
        print(json.dumps({"published": rows[-1]}), flush=True)
    return versions, rows


def fetch_times(uri: str, endpoint: str, cache: Path, versions: list[str]) -> list[dict[str, Any]]:
    """``verified_model_path`` with an empty cache (and no manifest read yet), then again."""
    from shared.registry.objects import ObjectStoreRegistry

    registry = ObjectStoreRegistry(uri, cache, endpoint_url=endpoint)
    rows = []
    for version in versions:
        started = time.perf_counter()
        registry.verified_model_path(version)
        cold = time.perf_counter()
        registry.verified_model_path(version)
        rows.append({"version": version, "cold_s": cold - started,
                     "warm_s": time.perf_counter() - cold})
        print(json.dumps({"fetched": rows[-1]}), flush=True)
    return rows


# -- 2. the APIs ------------------------------------------------------------------------------
@dataclass
class Api:
    name: str
    url: str
    state: Path
    log: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    def cached(self, version: str) -> bool:
        return (self.state / "model-cache" / version / "model.keras").is_file()

    def log_lines(self) -> list[dict[str, Any]]:
        """Its JSON log lines with "t" (epoch seconds); TensorFlow's native lines left out."""
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                entry["t"] = datetime.fromisoformat(entry["time"]).timestamp()
                lines.append(entry)
        return lines


def start_apis(work: Path, uri: str, endpoint: str, count: int, reload_s: float,
               processes: list[subprocess.Popen[bytes]]) -> list[Api]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")} | S3_ENV
    base |= {"CXR_MODELS_URI": uri, "CXR_S3_ENDPOINT_URL": endpoint, "CXR_BROKER_URL": REDIS_URL,
             "CXR_RELOAD_INTERVAL_S": str(reload_s), "CXR_LOG_FORMAT": "json",
             "CXR_LOG_LEVEL": "info", "TF_CPP_MIN_LOG_LEVEL": "2"}
    apis = []
    for i in range(count):
        port, folder = free_port(), work / f"api{i}"
        api = Api(f"api{i}", f"http://127.0.0.1:{port}", folder / "state", folder / "api.log")
        env = base | {"CXR_PORT": str(port), "CXR_STATE_DIR": str(api.state),
                      "CXR_DATA_DIR": str(folder / "data"),
                      "CXR_MODELS_DIR": str(folder / "models")}
        folder.mkdir(parents=True)
        with api.log.open("ab") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "cxr_cli", "serve"], cwd=REPO, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))  # Ctrl-C is ours to pass on
        apis.append(api)
    for api in apis:
        wait_until(lambda a=api: get_json(f"{a.url}/healthz") is not None, 180, f"{api.name} up")
    return apis


def get_json(url: str) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(url, timeout=5).json())
    except (httpx.HTTPError, ValueError):
        return None


def wait_until(done: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def first_serve(registry: Any, apis: list[Api], version: str, timeout: float) -> dict[str, Any]:
    """Activate ``version`` and time each API until /readyz names it."""
    cached = {api.name: api.cached(version) for api in apis}
    at = activate(registry, version)
    ready: dict[str, float] = {}
    while len(ready) < len(apis):
        for api in apis:
            if api.name not in ready and (get_json(f"{api.url}/readyz") or {}).get(
                    "model_version") == version:
                ready[api.name] = time.time() - at["at"]
        if time.time() - at["at"] > timeout:
            raise RuntimeError(f"{version} was not served within {timeout:g} s")
        time.sleep(0.05)
    return {**at, "apis": {api.name: {"cached": cached[api.name], "ready_s": ready[api.name],
                                      **from_log(api, version, at["at"])} for api in apis}}


def activate(registry: Any, version: str) -> dict[str, Any]:
    started = time.time()
    registry.activate(version)
    now = time.time()  # the pointer is in the store by now, at the latest
    print(json.dumps({"activated": version}), flush=True)
    return {"version": version, "at": now, "activate_call_s": now - started}


def from_log(api: Api, version: str, at: float) -> dict[str, Any]:
    """When the API began loading ``version`` after ``at``, how long that took, and when it
    swapped it in, from its own log lines (their times are milliseconds)."""
    found: dict[str, Any] = {"load_start_s": None, "load_s": None, "serving_s": None,
                             "runtime": None}
    for entry in api.log_lines():
        message = str(entry.get("message", ""))
        if entry["t"] < at - 0.5:
            continue
        if (m := LOADING.match(message)) and m[1] == version and found["load_start_s"] is None:
            found["load_start_s"] = entry["t"] - at
        elif (m := SERVING.match(message)) and m[1] == version and found["load_s"] is None:
            found |= {"load_s": float(m[3]), "runtime": m[2], "serving_s": entry["t"] - at}
    return found


# -- 3. swaps under load ----------------------------------------------------------------------
def load_loop(api: Api, images: list[bytes], halt: threading.Event) -> None:
    """Post radiographs to /predict one at a time until ``halt``; every answer recorded."""
    with httpx.Client(base_url=api.url, timeout=120) as client:
        i = 0
        while not halt.is_set():
            sent = time.time()
            record: dict[str, Any] = {"sent": sent, "status": 0, "header": "", "body": ""}
            try:
                answer = client.post("/predict", files={
                    "file": ("xray.png", images[i % len(images)], "image/png")})
                record |= {"status": answer.status_code,
                           "header": answer.headers.get("x-model-version", "")}
                if answer.status_code == 200:
                    record["body"] = answer.json().get("model_version", "")
                else:
                    record["error"] = answer.text[:300]
            except (httpx.HTTPError, ValueError) as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            record["done"] = time.time()
            api.records.append(record)
            i += 1


def swap(registry: Any, apis: list[Api], version: str, after: int,
         timeout: float) -> dict[str, Any]:
    """Activate ``version`` under load; done once every API gave ``after`` answers of it."""
    cached = {api.name: api.cached(version) for api in apis}
    at = activate(registry, version)

    def served() -> bool:
        return all(sum(r["done"] > at["at"] and r["header"] == version for r in api.records)
                   >= after for api in apis)

    wait_until(served, timeout, f"{version} served by every API", every=0.1)
    end = time.time()
    return {**at, "end": end, "apis": {api.name: {"cached": cached[api.name],
                                                   **from_log(api, version, at["at"]),
                                                   **answers(api.records, version, at["at"], end)}
                                       for api in apis}}


def answers(records: list[dict[str, Any]], version: str, at: float, end: float) -> dict[str, Any]:
    """The answers of one API that were in flight between ``at`` and ``end``."""
    mine = [r for r in records if r["done"] >= at and r["sent"] <= end]
    new = [r["done"] for r in mine if r["status"] == 200 and r["header"] == version]
    first = min(new, default=None)
    latencies = np.array([r["done"] - r["sent"] for r in mine] or [np.nan]) * 1000
    return {
        "first_answer_s": None if first is None else first - at,
        "answers": len(mine), "by_version": dict(Counter(r["header"] for r in mine)),
        "non_200": sum(r["status"] not in (0, 200) for r in mine),
        "transport_errors": sum(r["status"] == 0 for r in mine),
        "mismatched": sum(r["status"] == 200 and r["header"] != r["body"] for r in mine),
        "stale": sum(first is not None and r["sent"] > first and r["header"] != version
                     for r in mine),
        "p50_ms": float(np.percentile(latencies, 50)), "max_ms": float(np.max(latencies))}


def run_swaps(registry: Any, apis: list[Api], versions: list[str],
              args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    images = request_images(args.images)
    halt = threading.Event()
    threads = [threading.Thread(target=load_loop, args=(api, images, halt), daemon=True)
               for api in apis]
    for thread in threads:
        thread.start()
    began, swaps = time.time(), []
    try:
        for number in args.sequence:
            time.sleep(args.steady)
            swaps.append(swap(registry, apis, versions[number - 1], args.after, args.timeout))
        time.sleep(args.steady)
    finally:
        halt.set()
        for thread in threads:
            thread.join(timeout=130)
    totals = {api.name: {k: v for k, v in answers(api.records, "", began, time.time()).items()
                         if k not in ("first_answer_s", "stale")} for api in apis}
    return swaps, totals


# -- report -----------------------------------------------------------------------------------
def log_problems(apis: list[Api]) -> dict[str, list[str]]:
    """Each API's own warning and error lines."""
    return {api.name: [f"{e['level']} {e.get('logger', '')}: {e.get('message', '')}"[:300]
                       for e in api.log_lines() if e.get("level") in ("WARNING", "ERROR",
                                                                         "CRITICAL")]
            for api in apis}


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(result: dict[str, Any]) -> str:
    number = {v: i + 1 for i, v in enumerate(result["versions"])}
    mb = result["published"][0]["bytes"] / 1e6
    lines = [f"Registry on moto S3 (loopback), {len(result['apis'])} API replicas, "
             f"{result['size']} px VGG16, model file {mb:.1f} MB "
             f"({result['published'][0]['bytes']} bytes).", "",
             "version  build+save s  sha256 s  publish s  fetch cold s  fetch warm s"]
    for pub, fetch in zip(result["published"], result["fetched"], strict=True):
        lines.append(f"{number[pub['version']]:>7}  {pub['build_save_s']:>12.2f}  "
                     f"{pub['sha256_s']:>8.2f}  {pub['publish_s']:>9.2f}  "
                     f"{fetch['cold_s']:>12.2f}  {fetch['warm_s']:>12.2f}")
    lines += ["", "publish: sha256 + upload + manifest; fetch: verified_model_path in this "
              "process (cold: manifest + download + sha256; warm: sha256 of the cached copy).",
              "", "Seconds after each activation (the pointer written in the store):", "",
              "activation  api   cached  loading at  load took  serving at  first answer  "
              "answers  non-200  transport  mismatch  stale  p50 ms  max ms"]
    for label, act in [("1 first", result["first_serve"])] + [
            (f"-> {number[s['version']]}", s) for s in result["swaps"]]:
        for name, row in act["apis"].items():
            first = row.get("first_answer_s", row.get("ready_s"))
            counts = (f"{row['answers']:>7}  {row['non_200']:>7}  {row['transport_errors']:>9}"
                      f"  {row['mismatched']:>8}  {row['stale']:>5}  {row['p50_ms']:>6.0f}  "
                      f"{row['max_ms']:>6.0f}" if "answers" in row else
                      "   (readiness: /readyz, no load)")
            lines.append(f"{label:<10}  {name:<4}  {'yes' if row['cached'] else 'no':<6}  "
                         f"{seconds(row['load_start_s']):>10}  {seconds(row['load_s']):>9}  "
                         f"{seconds(row['serving_s']):>10}  {seconds(first):>12}  {counts}")
    lines.append("")
    for name, total in result["totals"].items():
        by = ", ".join(f"{number.get(k, k)}: {n}" for k, n in total["by_version"].items())
        lines.append(f"{name} under load: {total['answers']} answers (by version {by}), "
                     f"{total['non_200']} non-200, {total['transport_errors']} transport errors, "
                     f"{total['mismatched']} header/body mismatches, p50 {total['p50_ms']:.0f} "
                     f"ms, max {total['max_ms']:.0f} ms; "
                     f"{len(result['log_problems'][name])} warning/error log lines.")
    lines.append("Verdict: " + ("; ".join(result["failures"]) or "PASS"))
    return "\n".join(lines)


def failures(result: dict[str, Any]) -> list[str]:
    found = []
    for key in ("non_200", "transport_errors", "mismatched"):
        if n := sum(total[key] for total in result["totals"].values()):
            found.append(f"{n} {key}")
    if n := sum(row["stale"] for s in result["swaps"] for row in s["apis"].values()):
        found.append(f"{n} stale")
    return found


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so that SIGTERM, too, stops the servers in the finally below


def flush_db() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).flushdb()


def sequence(text: str) -> list[int]:
    numbers = [int(n) for n in text.split(",")]
    if any(n not in (1, 2, 3) for n in numbers):
        raise argparse.ArgumentTypeError("versions are numbered 1 to 3")
    return numbers


def main() -> None:
    parser = common.parser(__doc__)
    common.add_size(parser, 224)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--sequence", type=sequence, default=[2, 3, 1, 3],
                        help="versions (1-3) activated in turn under load, after 1")
    parser.add_argument("--reload-interval", type=float, default=2.0, help="seconds")
    parser.add_argument("--steady", type=float, default=5,
                        help="seconds of load before each swap and after the last")
    parser.add_argument("--after", type=int, default=5,
                        help="answers of the new version from every API that end a swap")
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per activation")
    args = parser.parse_args()
    for name, value in S3_ENV.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before this process imports Keras
    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix="cxr-replicas-"))
    print(json.dumps({"work": str(work)}), flush=True)
    processes: list[subprocess.Popen[bytes]] = []
    apis: list[Api] = []
    flush_db()
    try:
        endpoint = start_moto(work, processes)
        from shared.registry.objects import ObjectStoreRegistry

        uri = f"s3://{BUCKET}/models"
        registry = ObjectStoreRegistry(uri, work / "publisher", endpoint_url=endpoint)
        versions, published = publish(registry, args.size, 3)
        fetched = fetch_times(uri, endpoint, work / "fetcher", versions)
        apis = start_apis(work, uri, endpoint, args.replicas, args.reload_interval, processes)
        first = first_serve(registry, apis, versions[0], args.timeout)
        swaps, totals = run_swaps(registry, apis, versions, args)
    finally:
        stop(processes)
        flush_db()
        for folder in [work / "publisher", work / "fetcher",
                       *(api.state / "model-cache" for api in apis)]:
            shutil.rmtree(folder, ignore_errors=True)  # hundreds of MB; the logs stay
    result: dict[str, Any] = {
        "size": args.size, "versions": versions, "sequence": args.sequence,
        "reload_interval_s": args.reload_interval, "cores": os.cpu_count(), "work": str(work),
        "apis": {api.name: {"url": api.url, "log": str(api.log)} for api in apis},
        "published": published, "fetched": fetched, "first_serve": first, "swaps": swaps,
        "totals": totals, "log_problems": log_problems(apis),
        "problems": [r for api in apis for r in api.records if r["status"] != 200][:50]}
    result["failures"] = failures(result)
    common.save("replicas" if args.size == 224 else f"replicas_{args.size}px", result)
    print(table(result))
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # the servers are already stopped
