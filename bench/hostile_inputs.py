"""What hostile requests cost everyone else: the stall of other requests during a huge header
and a huge keyless JSON body, and the API's peak memory under concurrent large-declared PNGs.

`cxr serve` (a random-weight version, 32 px, activated; recorded as every new version is, so
large images are decoded at reduced size, unless --full-decode), as users start it. A prober sends
GET /healthz every 20 ms throughout and records each answer's latency; the figures are the
largest latency while each hostile request is in flight, against the largest at rest.

    .venv/bin/python bench/hostile_inputs.py [--header-mb 128] [--json-mb 300] [--images 8]
        [--format PNG|JPEG] [--full-decode]

Prints a table and writes bench/results/hostile_inputs.json.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
import httpx
from PIL import Image
from serve_benchmark import service_env, start

MiB = 1024 * 1024


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class Prober(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.samples, self.stop = url, list[tuple[float, float]](), threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                client.get(f"{self.url}/healthz")
                self.samples.append((started, time.monotonic() - started))
                time.sleep(0.02)

    def worst(self, start: float, end: float) -> float:
        return max((s for t, s in self.samples if start <= t <= end), default=0.0) * 1000


def raw_send(port: int, head: bytes, body_bytes: int, fill: bytes = b"\0",
             chunk: int = 1 * MiB) -> float:
    """Send ``head`` then ``fill`` bytes until the server answers or closes; seconds taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        try:
            sock.sendall(head)
            sent = 0
            sock.setblocking(False)
            deadline = started + 30  # a server that stops reading never answers
            while sent < body_bytes and time.monotonic() < deadline:
                try:
                    sent += sock.send(fill * min(chunk, body_bytes - sent))
                except BlockingIOError:
                    time.sleep(0.001)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # answered
                except BlockingIOError:
                    pass
            sock.settimeout(max(1.0, deadline - time.monotonic()))
            sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    return time.monotonic() - started


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--header-mb", type=int, default=128)
    parser.add_argument("--json-mb", type=int, default=300)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--side", type=int, default=7000)
    parser.add_argument("--format", choices=["PNG", "JPEG"], default="PNG")
    parser.add_argument("--full-decode", action="store_true",
                        help="serve a version recorded before reduced decoding")
    args = parser.parse_args()
    from shared.ml.preprocessing import PreprocessOptions, preprocessing_id
    from shared.registry.local import LocalRegistry
    from tests.helpers.versions import publish_random

    work = Path(tempfile.mkdtemp(prefix="cxr-hostile-"))
    registry = LocalRegistry(work / "models")
    options = PreprocessOptions(reduce_large=not args.full_decode)
    registry.activate(publish_random(registry, seed=1, extra={
        "preprocessing": preprocessing_id(options), "preprocessing_options": options.as_dict()}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = start([sys.executable, "-m", "cxr_cli", "serve"], service_env(work, port), url,
                   work / "serve.log")
    prober = Prober(url)
    prober.start()
    figures: dict[str, float] = {}
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
        buffer = io.BytesIO()
        Image.new("L", (args.side, args.side), 90).save(buffer, format=args.format)
        png = buffer.getvalue()
        figures["decode"] = "full" if args.full_decode else "reduced"  # type: ignore[assignment]
        figures["image_format"] = args.format  # type: ignore[assignment]
        figures["image_kb"] = round(len(png) / 1024, 1)
        figures["rss_peak_mb_before_images"] = round(peak_rss_mb(server.pid), 0)
        with httpx.Client(timeout=600) as client, ThreadPoolExecutor(args.images) as pool:
            statuses = list(pool.map(lambda _: client.post(
                f"{url}/predict", files={"file": ("big.png", png)}).status_code,
                range(args.images)))
        figures["rss_peak_mb_after_images"] = round(peak_rss_mb(server.pid), 0)
        figures["image_statuses"] = statuses  # type: ignore[assignment]
    finally:
        prober.stop.set()
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(figures, indent=1))
    common.save(f"hostile_inputs_{args.format.lower()}_{figures['decode']}", figures, indent=1)


if __name__ == "__main__":
    main()
