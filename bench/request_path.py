"""Where a /predict request's CPU goes: each stage of the answering path timed in process, in
CPU milliseconds per image, beside what the whole server spends per image under load.

1. stages, in this process, on real radiographs and a published version (its runtime chosen
   as the service chooses it): multipart parsing (Starlette's form over python-multipart),
   decode, preparation, the chest-radiograph gate (features, score), the forward pass at the
   version's batch size (all its threads), calibration with the shift score, the answer
   objects, the response's JSON, and the prediction log's record;
2. the server: `cxr serve` on a copy of the same registry, driven at each concurrency for
   `--seconds`; its process CPU per image answered, each of its threads' share (named by
   py-spy, from the bench extra: the batcher, the runtime's own pool, the event loop, the
   decoding threads, the prediction log's writer), and the client's own CPU.

What the server spends beyond the sum of the stages is the framework (HTTP, routing,
middleware, dependencies), the hand-offs between threads and the event loop, and what threads
fighting for the cores waste (spinning, preemption).

    .venv/bin/python bench/request_path.py --models DIR [--version V] [--seconds 15]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import numpy as np
import psutil
from serve_benchmark import load, request_images, service_env, start, summarize


def cpu_ms(work: Callable[[], object], count: int, rounds: int = 7,
           clock: Callable[[], float] = time.thread_time) -> float:
    """The median over ``rounds`` of ``work``'s CPU milliseconds per item (``count`` items a
    call) on ``clock``: this thread's by default, the whole process's for a forward pass."""
    work()  # the first call allocates
    times = []
    for _ in range(rounds):
        started = clock()
        work()
        times.append((clock() - started) / count * 1000)
    return float(np.median(times))


def multipart_ms(images: list[bytes]) -> float:
    """Starlette's form parsing of one-image bodies, as FastAPI's File() reads them."""
    from starlette.requests import Request

    boundary = "cxrbenchboundary"

    def body(data: bytes) -> bytes:
        return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + data + \
            f"\r\n--{boundary}--\r\n".encode()

    bodies = [body(data) for data in images]

    async def parse_all() -> None:
        for raw in bodies:
            async def receive(raw: bytes = raw) -> dict[str, Any]:
                return {"type": "http.request", "body": raw, "more_body": False}

            scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [
                (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                (b"content-length", str(len(raw)).encode())]}
            form = await Request(scope, receive).form()
            await form.close()

    loop = asyncio.new_event_loop()
    try:
        return cpu_ms(lambda: loop.run_until_complete(parse_all()), len(images))
    finally:
        loop.close()


def stages(models: Path, version: str, images: list[bytes]) -> dict[str, Any]:
    from pydantic import TypeAdapter

    from shared.loading import load_version
    from shared.ml.chest_gate import gate_features
    from shared.ml.preprocessing import gray_to_pixels, prepare_gray, to_model_input
    from shared.ml.runtimes import warm_batch_sizes
    from shared.ml.screening import with_check
    from shared.monitoring.answers import answer_record
    from shared.registry.local import LocalRegistry
    from shared.schemas import Prediction, Predictions

    served = load_version(LocalRegistry(models), version, runtime="auto", precision="auto",
                          warm_batch_sizes=warm_batch_sizes(16))
    n, batch = len(images), served.batch_size
    decoded = [served.decode(data, 50_000_000) for data in images]
    pixels = np.stack([gray_to_pixels(prepare_gray(d.gray, served.options), served.image_size)
                       for d in decoded])
    features = np.stack([gate_features(p[..., 0]) for p in pixels])
    rows = {"multipart": multipart_ms(images),
            "decode": cpu_ms(lambda: [served.decode(data, 50_000_000) for data in images], n),
            "prepare": cpu_ms(lambda: [gray_to_pixels(prepare_gray(d.gray, served.options),
                                                      served.image_size) for d in decoded], n),
            "gate features": cpu_ms(lambda: [gate_features(p[..., 0]) for p in pixels], n)}
    gate = served.gate
    if gate is not None:
        rows["gate score"] = cpu_ms(lambda: [gate.check(p[..., 0], 0.0, f)
                                             for p, f in zip(pixels, features, strict=True)], n)
    x = np.resize(pixels, (batch, *pixels.shape[1:]))
    rows["model input"] = cpu_ms(lambda: to_model_input(np.stack(list(x))), batch)
    model_input = to_model_input(x)
    rows["forward (all threads)"] = cpu_ms(lambda: served.forward(model_input), batch,
                                           clock=time.process_time)
    wall = cpu_ms(lambda: served.forward(model_input), batch, clock=time.perf_counter)
    outputs = served.forward(model_input)
    inputs = np.resize(features, (batch, features.shape[1]))
    if served.shift is not None:
        raw_features, raw = (np.asarray(t) for t in outputs)
        rows["calibration + shift"] = cpu_ms(
            lambda: served.calibrated(raw, raw_features, x, inputs), batch)
        result = served.calibrated(raw, raw_features, x, inputs)
    else:
        rows["calibration"] = cpu_ms(lambda: served.calibrated(np.asarray(outputs), None, x),
                                     batch)
        result = served.calibrated(np.asarray(outputs), None, x)
    rows["answer objects"] = cpu_ms(lambda: [with_check(served.answer(result, i), None)
                                             for i in range(batch)], batch)
    answer = served.answer(result, 0)
    adapter = TypeAdapter(Prediction | Predictions)
    rows["response JSON"] = cpu_ms(lambda: [adapter.dump_json(adapter.validate_python(answer))
                                            for _ in range(n)], n)
    at = datetime.now(UTC)
    rows["log record"] = cpu_ms(lambda: [answer_record(answer, "x" * 32, "api", at)
                                         for _ in range(n)], n)
    beside = sum(v for k, v in rows.items() if not k.startswith("forward"))
    return {"runtime": served.runtime, "precision": served.precision, "batch": batch,
            "size": served.image_size, "cpu_ms_per_image": rows,
            "forward_wall_ms_per_image": wall, "stages_beside_forward_ms": beside}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, by thread id."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        found[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def thread_names(pid: int) -> dict[str, str]:
    """Python's names of the threads of ``pid`` (py-spy reads them from outside), by thread
    id; threads Python did not start (the runtime's pool) are not named."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return {}
    dump = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True,
                          text=True, check=False).stdout
    names = {}
    for line in dump.splitlines():
        if line.startswith("Thread ") and '"' in line:
            names[str(int(line.split()[1], 0))] = line.split('"')[1]
    return names


def by_thread(before: dict[str, float], after: dict[str, float], names: dict[str, str],
              images: float) -> dict[str, float]:
    """CPU milliseconds per image of each thread (those of the same name summed; the
    runtime's own pool as "runtime pool")."""
    shares: dict[str, float] = {}
    for tid, seconds in after.items():
        name = names.get(tid, "runtime pool")
        shares[name] = shares.get(name, 0.0) + 1000 * (seconds - before.get(tid, 0.0)) / images
    return dict(sorted(((k, v) for k, v in shares.items() if v >= 0.01),
                       key=lambda kv: -kv[1]))


def server(models: Path, version: str, images: list[bytes], levels: list[int], seconds: float,
           port: int) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="cxr-request-path-"))
    shutil.copytree(models, work / "models")
    from shared.registry.local import LocalRegistry

    LocalRegistry(work / "models").activate(version)
    url = f"http://127.0.0.1:{port}"
    env = {**service_env(work, port), "CXR_INFERENCE_PRECISION": "auto"}
    process = start([sys.executable, "-m", "cxr_cli", "serve"], env, url, log=work / "log")
    tree = psutil.Process(process.pid)

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in [tree, *tree.children(recursive=True)])

    rows = []
    try:
        asyncio.run(load(url, images, 4, 3))
        for concurrency in levels:
            threads, before, mine = thread_cpu(process.pid), cpu(), time.process_time()
            run = asyncio.run(load(url, images, concurrency, seconds))
            spent, client = cpu() - before, time.process_time() - mine
            summary = summarize(run["records"], run["elapsed_s"])
            answered = summary["throughput"] * run["elapsed_s"]
            rows.append({"concurrency": concurrency, **summary,
                         "server_cpu_ms_per_image": 1000 * spent / answered,
                         "client_cpu_ms_per_image": 1000 * client / answered,
                         "threads_cpu_ms_per_image": by_thread(
                             threads, thread_cpu(process.pid), thread_names(process.pid),
                             answered)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    s = result["stages"]
    lines = [f"Stages in process ({s['size']} px, {s['runtime']} {s['precision']}, forward at "
             f"batch {s['batch']}: {s['forward_wall_ms_per_image']:.1f} ms wall per image):",
             "", "| stage | CPU ms per image |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in s["cpu_ms_per_image"].items()]
    lines += [f"| all stages beside the forward pass | {s['stages_beside_forward_ms']:.2f} |",
              "", "| concurrency | images/s | p50 ms | server CPU ms/image | client CPU ms/image "
              "|", "|---|---|---|---|---|"]
    lines += [f"| {r['concurrency']} | {r['throughput']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['server_cpu_ms_per_image']:.1f} | {r['client_cpu_ms_per_image']:.1f} |"
              for r in result["server"]]
    for r in result["server"]:
        shares = ", ".join(f"{k} {v:.2f}" for k, v in r["threads_cpu_ms_per_image"].items())
        lines += ["", f"Server threads at concurrency {r['concurrency']}, CPU ms per image: "
                  f"{shares}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--models", type=Path, required=True,
                        help="a registry folder holding a version with an INT8 copy")
    parser.add_argument("--version", help="the version (default: the newest)")
    common.add_load(parser, seconds=15, batches="8")
    common.add_port(parser, 8397)
    args = parser.parse_args()
    from shared.registry.local import LocalRegistry

    version = args.version or LocalRegistry(args.models).versions()[0].version
    images = request_images(8)
    result = {"version": version, "stages": stages(args.models, version, images)}
    print(json.dumps(result["stages"], indent=1), flush=True)
    result["server"] = server(args.models, version, images, args.levels, args.seconds,
                              args.port)
    print(markdown(result))
    common.save("request_path", result, markdown(result))


if __name__ == "__main__":
    main()
