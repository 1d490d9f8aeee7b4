"""cxr-service beside the serving frameworks a team would pick instead: the same model, images,
machine and client, in one run.

Every peer of bench/peer_servers/ (``<name>_peer.py``: KServe, LitServe, BentoML, PyTriton)
serves the version's checked INT8 copy with the service's own decode and preparation, in one
process tree, its own batching on where it has one. The run:

1. ceilings: the forward pass called directly in this process, ONNX Runtime INT8 and float32,
   TensorFlow float32 and OpenVINO INT8, batches 1 to 32: each runtime's best;
2. `cxr serve` (runtime and precision "auto"), on ``/predict`` (multipart) and on the Open
   Inference Protocol's ``/v2/models/cxr/infer`` (binary tensor data), then each peer in turn,
   never two servers at once: one async client at each concurrency for a fixed time after a
   warm-up, with the fastest runtime's ceiling measured again just before each level (the
   machine's speed drifts); images/s, p50/p99, errors (a status other than 200, or an answer
   of the wrong shape), the client's CPU per request (it shares the cores), and the resident
   memory of the server's whole process tree;
3. whether each server's top class on 8 films agrees with the service's;
4. the ceilings again.

Writes bench/results/peers.json and peers.md and prints the table.

    .venv/bin/python bench/peers.py --models DIR --version V    # or: make bench-peers
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import common
import httpx
import numpy as np
import psutil  # type: ignore[import-untyped]
from common import REPO
from serve_benchmark import ADMIN, request_images, service_env, start, summarize, timed

PEER_DIR = Path(__file__).resolve().parent / "peer_servers"
if str(PEER_DIR) not in sys.path:
    sys.path.insert(0, str(PEER_DIR))  # the peers import their contract as a sibling
from contract import Peer, PeerArgs, PeerRequest, multipart_request  # noqa: E402

RUNTIMES = ("onnx-int8", "onnx", "tensorflow", "openvino")  # the ceilings', fastest kept
OIP_MODEL = "cxr"
AGREEMENT_FILMS = 8


# -- what is driven ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A server as the client sees it: the request for an image and the top class of an
    answer (which raises, or is out of range, for an answer of the wrong shape)."""

    name: str
    request: Callable[[bytes], PeerRequest]
    top_class: Callable[[bytes], int]


def discover_peers(folder: Path = PEER_DIR) -> dict[str, Peer]:
    """Every ``<name>_peer.py`` of the folder's ``PEER``, by its name (no framework imported)."""
    peers: dict[str, Peer] = {}
    for path in sorted(folder.glob("*_peer.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # dataclasses look their module up while defined
        spec.loader.exec_module(module)
        peers[module.PEER.name] = module.PEER
    return peers


def peer_target(peer: Peer) -> Target:
    return Target(peer.name, peer.request, peer.top_class)


def service_targets(classes: Sequence[str], key_headers: dict[str, str]) -> list[Target]:
    """The service on /predict and on the Open Inference Protocol route."""

    def predict_top(body: bytes) -> int:
        probabilities = json.loads(body)["probabilities"]
        return int(np.argmax([probabilities[c] for c in classes]))

    def oip_request(image: bytes) -> PeerRequest:
        # tritonclient's way: the JSON, then the BYTES element (its length, then its bytes)
        tensor = struct.pack("<I", len(image)) + image
        head = json.dumps({
            "inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(tensor)}}],
            "outputs": [{"name": "PROBABILITIES"}]}).encode()
        return PeerRequest(f"/v2/models/{OIP_MODEL}/infer", head + tensor,
                           {"content-type": "application/octet-stream",
                            "inference-header-content-length": str(len(head)), **key_headers})

    def oip_top(body: bytes) -> int:
        output = next(o for o in json.loads(body)["outputs"] if o["name"] == "PROBABILITIES")
        probabilities = np.asarray(output["data"], np.float32).reshape(output["shape"])
        if probabilities.shape != (1, len(classes)):
            raise ValueError(f"probabilities of shape {probabilities.shape}")
        return int(probabilities[0].argmax())

    return [Target("cxr /predict", lambda image: multipart_request(image, headers=key_headers),
                   predict_top),
            Target("cxr OIP", oip_request, oip_top)]


# -- load -------------------------------------------------------------------------------------
@dataclass
class LoadRun:
    records: list[tuple[float, float, int, str]]  # (start, latency, status, ""): summarize's
    elapsed_s: float
    client_cpu_s: float
    wrong_shape: int = 0
    rss_mb: float = 0.0  # the most the server's process tree held while loaded
    pss_mb: float = 0.0
    tops: list[int] = field(default_factory=list)


def tree_memory(pid: int, proportional: bool = True) -> tuple[float, float]:
    """Resident and proportional set size (MB) of a process and all its descendants: shared
    pages count once in PSS, in every process in RSS. PSS reads every mapping's page counts
    (/proc/<pid>/smaps), tens of milliseconds of this process's CPU for a server holding
    TensorFlow: without ``proportional``, PSS is left at RSS."""
    rss = pss = 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    for process in processes:
        try:
            info = process.memory_full_info() if proportional else process.memory_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss / 2**20
        pss += getattr(info, "pss", info.rss) / 2**20
    return rss, pss


async def drive(url: str, target: Target, images: list[bytes], concurrency: int,
                seconds: float, classes: int, pid: int | None = None) -> LoadRun:
    """``concurrency`` clients, each sending one image a request for ``seconds`` (a request
    started in time is waited for); an answer that is not 200 or whose top class cannot be
    read is an error. Samples the server's memory (``pid``'s tree) meanwhile."""
    requests = [target.request(image) for image in images]
    records: list[tuple[float, float, int, str]] = []
    run = LoadRun(records, 0.0, 0.0)
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        cpu, began = time.process_time(), time.monotonic()

        async def one_client(worker: int) -> None:
            i = worker
            while time.monotonic() - began < seconds:
                request = requests[i % len(requests)]
                started = time.monotonic()
                try:
                    async with session.post(request.path, data=request.content,
                                            headers=request.headers) as response:
                        body, status = await response.read(), response.status
                except (TimeoutError, aiohttp.ClientError):
                    body, status = b"", 0
                latency = time.monotonic() - started
                if status == 200:
                    try:
                        top = target.top_class(body)
                        if not 0 <= top < classes:
                            raise ValueError(f"class {top}")
                        run.tops.append(top)
                    except (ValueError, KeyError, TypeError, StopIteration, IndexError):
                        status = -1  # 200, but not an answer of this model's shape
                        run.wrong_shape += 1
                records.append((started - began, latency, status, ""))
                i += concurrency

        async def sample_memory() -> None:
            # RSS only while loaded (cheap), PSS once after: reading it costs the client's
            # process, which shares the cores with the server, more for a larger server.
            while pid is not None:
                rss, _ = await asyncio.to_thread(tree_memory, pid, False)
                run.rss_mb = max(run.rss_mb, rss)
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample_memory())
        await asyncio.gather(*(one_client(w) for w in range(concurrency)))
        sampler.cancel()
        run.elapsed_s = time.monotonic() - began
        run.client_cpu_s = time.process_time() - cpu
        if pid is not None:
            rss, run.pss_mb = tree_memory(pid)
            run.rss_mb = max(run.rss_mb, rss)
    return run


def load(url: str, target: Target, images: list[bytes], concurrency: int, seconds: float,
         classes: int, pid: int | None = None) -> LoadRun:
    """``drive`` from synchronous code (the tests call this)."""
    return asyncio.run(drive(url, target, images, concurrency, seconds, classes, pid))


def top_classes(url: str, target: Target, images: list[bytes]) -> list[int | None]:
    """The server's top class for each image, one request at a time (None: no answer)."""
    tops: list[int | None] = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for image in images:
            request = target.request(image)
            response = client.post(request.path, content=request.content,
                                   headers=request.headers)
            try:
                tops.append(target.top_class(response.content)
                            if response.status_code == 200 else None)
            except (ValueError, KeyError, TypeError, StopIteration, IndexError):
                tops.append(None)
    return tops


def sweep(url: str, target: Target, images: list[bytes], levels: list[int], seconds: float,
          classes: int, pid: int, recheck: Callable[[], float]) -> list[dict[str, Any]]:
    rows = []
    for concurrency in levels:
        now = recheck()  # while the server is idle
        load(url, target, images, concurrency, min(5.0, max(1.0, seconds / 4)), classes)
        run = load(url, target, images, concurrency, seconds, classes, pid)
        stats = summarize(run.records, run.elapsed_s)
        statuses = Counter(str(r[2]) for r in run.records)  # -1: 200 of the wrong shape
        rows.append({"server": target.name, "concurrency": concurrency, "ceiling_now": now,
                     **stats, "statuses": dict(statuses), "wrong_shape": run.wrong_shape,
                     "rss_mb": run.rss_mb,
                     "pss_mb": run.pss_mb,
                     "client_cpu_ms_per_request": 1000 * run.client_cpu_s / max(1, len(
                         run.records))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# -- servers ----------------------------------------------------------------------------------
def start_peer(peer: Peer, args: PeerArgs, env: dict[str, str], log: Path,
               timeout: float = 300) -> subprocess.Popen[bytes]:
    """A peer in a process group of its own, once ``ready_path`` answers 200."""
    url = f"http://127.0.0.1:{args.port}"
    with log.open("ab") as output:
        process = subprocess.Popen(peer.command(sys.executable, args), cwd=REPO, env=env,
                                   stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + peer.ready_path, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop(process)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"peer {peer.name} did not become ready; its log ends:\n{tail}")


def peer_environment() -> dict[str, str]:
    """This process's environment without the service's settings (a peer reads none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2"}


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server's whole process group: SIGINT first (LitServe and uvicorn shut down on
    it; LitServe's parent ignores SIGTERM), then SIGTERM, then SIGKILL."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for child in descendants:  # any that left the group
        if child.is_running():
            child.kill()


def served_candidate(ready: dict[str, Any]) -> str:
    """The runtime candidate (shared.ml.runtimes) of what the service chose to serve."""
    runtime, precision = ready.get("model_runtime"), ready.get("model_precision")
    if runtime == "onnx" and precision == "int8":
        return "onnx-int8"
    if runtime == "tensorflow":
        # the peers serve ONNX files: keep the arithmetic the service's float choice has
        print("the service chose TensorFlow; the peers serve the float ONNX export", flush=True)
        return "onnx"
    return str(runtime)


def free_port() -> int:
    """A port nothing listens on now: a fixed one may be held by a process of someone else's
    on a shared machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peer_batch(rows: list[dict[str, Any]], runtime: str) -> int:
    """The peers' largest batch: the batch at which the runtime they serve passed the most
    images a second in this run's ceiling, as the frameworks' batching guides advise (the
    size where throughput stops growing), and at least 2, so that batching stays on even
    where the machine gains nothing from it."""
    measured = [r for r in rows if r["runtime"] == runtime]
    return max(2, max(measured, key=lambda r: r["images_per_s"])["batch"] if measured else 8)


# -- ceilings ---------------------------------------------------------------------------------
def forward_of(models: Path, version: str, runtime: str) -> tuple[Callable[..., Any], int]:
    """A runtime's forward pass of the version (plain softmax) and its image size."""
    from model import load_peer_model

    if runtime == "tensorflow":
        from shared.loading import load_version
        from shared.ml.preprocessing import to_model_input
        from shared.ml.runtimes import compiled_forward
        from shared.registry.local import LocalRegistry

        loaded = load_version(LocalRegistry(models), version, runtime="tensorflow",
                              precision="float32")
        forward = compiled_forward(loaded.model, loaded.image_size, with_features=False)
        return (lambda pixels: forward(to_model_input(pixels))), loaded.image_size
    peer_model = load_peer_model(models, version, runtime)
    return peer_model.predict, peer_model.image_size


def ceilings(models: Path, version: str, batches: list[int]
             ) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, Any]]:
    """Rows of (runtime, batch, images/s, latency), the runtimes skipped and why, and the
    fastest runtime's forward pass, batch and size for measuring it again."""
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    fastest: dict[str, Any] = {"images_per_s": 0.0}
    for runtime in RUNTIMES:
        try:
            forward, size = forward_of(models, version, runtime)
        except (ValueError, ImportError, SystemExit) as exc:
            skipped[runtime] = str(exc)
            print(f"ceiling of {runtime} skipped: {exc}", flush=True)
            continue
        for batch in batches:
            pixels = np.random.default_rng(batch).uniform(
                0, 255, (batch, size, size, 3)).astype(np.float32)
            forward(pixels)
            row = timed(runtime, forward, pixels, max(2, 16 // batch))
            rows.append(row)
            if row["images_per_s"] > fastest["images_per_s"]:
                fastest = {**row, "forward": forward, "size": size}
        del forward  # only the fastest runtime's pass is kept
    return rows, skipped, fastest


def ceiling_now(fastest: dict[str, Any], seconds: float) -> float:
    """Images/s of the fastest runtime at its best batch, measured again now."""
    batch, size = fastest["batch"], fastest["size"]
    pixels = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < 2 or time.perf_counter() - began < seconds:
        started = time.perf_counter()
        fastest["forward"](pixels)
        times.append(time.perf_counter() - started)
    return float(batch / np.median(times))


def agreement(tops: list[int | None], reference: list[int | None]) -> str:
    agreeing = sum(a == b is not None for a, b in zip(tops, reference, strict=True))
    return f"{agreeing}/{len(reference)}"


def best(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_runtime: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["images_per_s"] > by_runtime.get(row["runtime"], {}).get("images_per_s", 0):
            by_runtime[row["runtime"]] = row
    return by_runtime


# -- setup ------------------------------------------------------------------------------------
def train_version(work: Path, size: int) -> tuple[Path, str]:
    """A version trained here as bench/precision_benchmark.py trains one (with its INT8 copy
    where the check keeps it)."""
    from precision_benchmark import train

    version, _ = train(work, size, per_class=150, epochs=4)
    return work / "models", version


def models_copy(source: Path, version: str, work: Path) -> Path:
    """The version's folder copied under ``work``: `cxr serve` writes its active pointer
    into its models folder, and the source is read only."""
    target = work / "models"
    shutil.copytree(source / version, target / version)
    return target


def markdown(result: dict[str, Any]) -> str:
    ceiling_best = best(result["ceilings_before"])
    fastest = max(ceiling_best.values(), key=lambda r: r["images_per_s"])
    lines = ["| runtime | best images/s (batch), before | after | batch-1 latency ms |",
             "|---|---|---|---|"]
    after = best(result["ceilings_after"])
    single = {r["runtime"]: r["latency_ms"] for r in result["ceilings_before"]
              if r["batch"] == 1}
    for runtime, row in ceiling_best.items():
        later = after.get(runtime)
        lines.append(f"| {runtime} | {row['images_per_s']:.2f} ({row['batch']}) | "
                     + (f"{later['images_per_s']:.2f} ({later['batch']})" if later else "-")
                     + f" | {single.get(runtime, float('nan')):.0f} |")
    for runtime, reason in result["ceilings_skipped"].items():
        lines.append(f"| {runtime} | skipped: {reason} | | |")
    lines += ["", "| server | concurrency | images/s | p50 ms | p99 ms | errors | RSS MB "
              "(PSS) | % of ceiling just before | client CPU ms/request |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['server']} | {r['concurrency']} | {r['throughput']:.2f} | "
            f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | {r['rss_mb']:.0f} "
            f"({r['pss_mb']:.0f}) | {r['throughput'] / r['ceiling_now']:.0%} | "
            f"{r['client_cpu_ms_per_request']:.1f} |")
    lines += ["", f"Fastest ceiling at the start: {fastest['runtime']} at batch "
              f"{fastest['batch']}, {fastest['images_per_s']:.2f} images/s; each level's % is "
              "of that runtime and batch measured again just before the level.",
              f"Peers served {result['peer_runtime']} (the service chose "
              f"{result['service_runtime']}), batches of up to {result['peer_max_batch']} "
              f"waiting at most {result['peer_batch_delay_ms']:g} ms where the framework "
              "batches."]
    for name, batching in result["batching"].items():
        lines.append(f"Batching, {name}: {batching}.")
    for name, agreement in result["agreement"].items():
        lines.append(f"Top class agreeing with cxr /predict on {AGREEMENT_FILMS} films, {name}: "
                     f"{agreement}.")
    for name, reason in result["failed"].items():
        lines.append(f"{name}: not measured: {reason}")
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--models", type=Path,
                        help="a LocalRegistry folder (read only); default: train a version")
    parser.add_argument("--version", help="the version of --models to serve (INT8 copy kept)")
    common.add_size(parser, 224)
    common.add_load(parser, seconds=20, batches="1,2,4,8,16,32")
    parser.add_argument("--peers", help="comma-separated peer names (default: every peer "
                        "file of bench/peer_servers)")
    parser.add_argument("--runtime", help="the peers' runtime: onnx-int8, onnx, openvino "
                        "(default: what the service chose with auto)")
    parser.add_argument("--max-batch", type=int,
                        help="the peers' largest batch (default: their runtime's best batch in "
                        "this run's ceiling, at least 2)")
    parser.add_argument("--batch-delay-ms", type=float, default=10.0,
                        help="the longest a peer's batch waits to fill (default 10)")
    common.add_port(parser, 8396)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxr-peers-bench-"))
    if args.models is None:
        source, version = train_version(work / "train", args.size)
    elif args.version is None:
        parser.error("--version is needed with --models")
    else:
        source, version = args.models, args.version
    peers = discover_peers()
    if args.peers:
        unknown = set(args.peers.split(",")) - set(peers)
        if unknown:
            parser.error(f"no peer {sorted(unknown)}; there are {sorted(peers)}")
        peers = {name: peers[name] for name in args.peers.split(",")}
    models = models_copy(source, version, work)
    from shared.registry.files import INT8_FILE
    from shared.registry.local import LocalRegistry

    registry = LocalRegistry(models)
    manifest = registry.manifest(version)
    if INT8_FILE not in manifest.files:
        raise SystemExit(f"version {version} kept no INT8 copy (its check failed): the peers "
                         "serve one; pass --models/--version of a version that has it")
    registry.activate(version)
    classes = list(manifest.classes)
    images, films = request_images(60), request_images(AGREEMENT_FILMS)
    result: dict[str, Any] = {"version": version, "size": manifest.image_size,
                              "cpus": os.cpu_count(), "seconds": args.seconds,
                              "levels": args.levels, "rows": [], "agreement": {},
                              "failed": {}, "peers": list(peers),
                              "batching": {name: getattr(peer, "batching", "not stated")
                                           for name, peer in peers.items()}}
    result["ceilings_before"], result["ceilings_skipped"], fastest = ceilings(
        models, version, args.batches)
    result["recheck"] = {"runtime": fastest["runtime"], "batch": fastest["batch"]}

    def recheck() -> float:
        return ceiling_now(fastest, min(5.0, args.seconds))

    env = service_env(work, args.port)
    # The chest-radiograph gate still runs, but answers (marked unreliable) instead of
    # refusing: a film the gate doubts is then an answer here as at every peer, not an error.
    env.update({"CXR_MODELS_DIR": str(models), "CXR_INFERENCE_RUNTIME": "auto",
                "CXR_INFERENCE_PRECISION": "auto", "CXR_XRAY_GATE": "warn"})
    url = f"http://127.0.0.1:{args.port}"
    server = start([sys.executable, "-m", "cxr_cli", "serve"], env, url, log=work / "serve.log")
    try:
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
        result["service_runtime"] = f"{ready.get('model_runtime')} {ready.get('model_precision')}"
        result["service_batch"] = ready.get("model_batch_size")
        result["batching"] = {"cxr": (
            f"its own: batches of up to {result['service_batch']} (the size it measured "
            "fastest per image as it loaded the version), waiting at most "
            "CXR_BATCH_MAX_DELAY_MS while others decode"),
            **result["batching"]}
        reference: list[int | None] = []
        for target in service_targets(classes, ADMIN):
            tops = top_classes(url, target, films)
            reference = reference or tops
            result["agreement"][target.name] = agreement(tops, reference)
            result["rows"] += sweep(url, target, images, args.levels, args.seconds,
                                    len(classes), server.pid, recheck)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    result["peer_runtime"] = args.runtime or served_candidate(ready)
    result["peer_max_batch"] = args.max_batch or peer_batch(
        result["ceilings_before"], result["peer_runtime"])
    result["peer_batch_delay_ms"] = args.batch_delay_ms
    peer_env = peer_environment()
    for name, peer in peers.items():
        peer_args = PeerArgs(models, version, result["peer_runtime"], free_port(),
                             result["peer_max_batch"], args.batch_delay_ms)
        peer_url = f"http://127.0.0.1:{peer_args.port}"
        try:
            process = start_peer(peer, peer_args, peer_env, work / f"{name}.log")
        except RuntimeError as exc:
            result["failed"][name] = str(exc).splitlines()[0]
            print(exc, flush=True)
            continue
        try:
            target = peer_target(peer)
            tops = top_classes(peer_url, target, films)
            result["agreement"][name] = agreement(tops, reference)
            print(f"{name}: top class agrees with cxr /predict on "
                  f"{result['agreement'][name]} films", flush=True)
            result["rows"] += sweep(peer_url, target, images, args.levels, args.seconds,
                                    len(classes), process.pid, recheck)
        finally:
            stop(process)
    fastest.pop("forward")  # its memory, before the runtimes load again
    result["ceilings_after"], _, _ = ceilings(models, version, args.batches)
    shutil.rmtree(models)  # the copy; the servers' logs stay
    text = markdown(result)
    common.save("peers", result, text)
    print(text)
    print(f"logs in {work}")


if __name__ == "__main__":
    main()

