"""Sequential /predict latency of the running service at a real input size.

Trains (from random init, the timing does not depend on the weights) and publishes a model at
--size px with `cxr train` into a temp registry, starts `cxr serve` on it, sends --n real
X-rays one at a time and prints p50/p95 latency and the server-side cold start.
Usage: .venv/bin/python bench/serve_latency.py [--size 224] [--n 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "covid19-radiography"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--port", type=int, default=8391)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxr-bench-"))
    tiny = work / "tiny"
    for label in ("COVID", "Normal", "Viral Pneumonia"):
        (tiny / label).mkdir(parents=True)
        for path in sorted((DATA / label / "images").iterdir())[:8]:
            (tiny / label / path.name).write_bytes(path.read_bytes())
    env = {**os.environ, "CXR_MODELS_DIR": str(work / "models"),
           "CXR_STATE_DIR": str(work / "state"), "CXR_PORT": str(args.port),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-m", "cxr_cli", "train", "--data", str(tiny), "--epochs",
                    "1", "--no-fine-tune", "--image-size", str(args.size), "--base-weights",
                    "none", "--batch-size", "8"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "cxr_cli", "serve"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        ready_s = time.monotonic() - started
        images = sorted((DATA / "Normal" / "images").iterdir())[100:100 + args.n]
        latencies = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for path in images:
                t0 = time.perf_counter()
                response = client.post("/predict", files={"file": (path.name, path.read_bytes())})
                latencies.append((time.perf_counter() - t0) * 1000)
                response.raise_for_status()
    finally:
        server.terminate()
        server.wait()
    latencies.sort()
    print(json.dumps({
        "image_size": args.size, "requests": len(latencies),
        "ready_after_start_s": round(ready_s, 2),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "images_per_s_sequential": round(1000 / statistics.mean(latencies), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
