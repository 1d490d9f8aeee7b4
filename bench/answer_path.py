"""/predict with one, eight and 32 images a request, and /healthz beside them: what the one
answering path costs a request of several images, and whether it starves the server.

A checkout's API (this one by default; `--checkout DIR` for another, say an older commit in a
worktree, to compare the two on the same machine) is started with uvicorn on a registry
holding one random-weight version (timing does not depend on the weights) and driven by one
async client, each level for `--seconds`; a probe asks /healthz every 0.2 s meanwhile.

    .venv/bin/python bench/answer_path.py [--checkout DIR] [--size 128] [--seconds 15]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import httpx
from common import RADIOGRAPHY, REPO

LEVELS = ((1, 16), (8, 4), (32, 4))  # (images a request, concurrent requests)


def publish_random(models: Path, size: int) -> str:
    """A random-weight version, activated: all that serving it needs."""
    from shared.manifest import DatasetRecord, ManifestDraft
    from shared.ml.modeling import ModelConfig, build_model
    from shared.registry.files import MODEL_FILE
    from shared.registry.local import LocalRegistry

    registry = LocalRegistry(models)
    staging = registry.new_staging()
    build_model(ModelConfig(num_classes=3, image_size=size)).save(staging / MODEL_FILE)
    draft = ManifestDraft(created_at=datetime.now(UTC), classes=list(common.CLASSES),
                          image_size=size, dataset=DatasetRecord(name="random"))
    return registry.publish(staging, draft, activate=True)


async def _level(client: httpx.AsyncClient, base: str, files: list[bytes], per_request: int,
                 concurrency: int, seconds: float) -> dict[str, Any]:
    answered, latencies, probes, errors = 0, [], [], 0
    end = time.monotonic() + seconds

    async def requests(start: int) -> None:
        nonlocal answered, errors
        turn = start
        while time.monotonic() < end:
            parts = [("file", (f"{i}.png", files[(turn + i) % len(files)], "image/png"))
                     for i in range(per_request)]
            turn += per_request
            began = time.perf_counter()
            response = await client.post(base + "/predict", files=parts)
            latencies.append(time.perf_counter() - began)
            answered += per_request if response.status_code == 200 else 0
            errors += response.status_code != 200

    async def probe() -> None:
        while time.monotonic() < end:
            began = time.perf_counter()
            await client.get(base + "/healthz")
            probes.append(time.perf_counter() - began)
            await asyncio.sleep(0.2)

    await asyncio.gather(*(requests(i) for i in range(concurrency)), probe())
    cuts = statistics.quantiles(latencies, n=100)
    return {"images_per_request": per_request, "concurrency": concurrency,
            "images_s": round(answered / seconds, 1), "p50_ms": round(1000 * cuts[49]),
            "p99_ms": round(1000 * cuts[98]), "errors": errors,
            "healthz_p50_ms": round(1000 * statistics.median(probes), 1),
            "healthz_max_ms": round(1000 * max(probes), 1)}


async def _drive(base: str, files: list[bytes], seconds: float) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=100)) as client:
        for _ in range(600):
            try:
                if (await client.get(base + "/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        else:
            raise SystemExit("the API did not get ready")
        await _level(client, base, files, 1, 4, 3)  # warm-up
        return [await _level(client, base, files, per, concurrency, seconds)
                for per, concurrency in LEVELS]


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--checkout", type=Path, default=REPO,
                        help="the checkout whose API is measured (default: this one)")
    common.add_size(parser, 128)
    common.add_port(parser, 8394)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="seconds of load at each level (default 15)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="answer-path-"))
    version = publish_random(work / "models", args.size)
    files = [p.read_bytes() for p in sorted((RADIOGRAPHY / "COVID" / "images").iterdir())[:32]]
    checkout = args.checkout.resolve()
    env = {**os.environ, "CXR_MODELS_DIR": str(work / "models"),
           "CXR_STATE_DIR": str(work / "state"), "CXR_DATA_DIR": str(work / "data"),
           "CXR_LOG_LEVEL": "warning", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(checkout)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port",
         str(args.port)], cwd=checkout, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        levels = asyncio.run(_drive(f"http://127.0.0.1:{args.port}", files, args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)
    for level in levels:
        print(level)
    common.save(f"answer_path_{checkout.name}", {
        "checkout": str(checkout), "version": version, "size": args.size,
        "seconds": args.seconds, "levels": levels})


if __name__ == "__main__":
    main()
