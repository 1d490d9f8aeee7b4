"""The measuring machinery of bench/hostile_inputs.py: probers that time requests to a
running API throughout, its memory readings from /proc, raw socket sends, and the start and
watch of an API for one run.
"""

from __future__ import annotations

import collections
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from serve_benchmark import start

MiB = 1024 * 1024
CASE_TIMEOUT_S = 120


# -- memory readings and probers ----------------------------------------------------------------
def memory_mb(pid: int, field: str = "VmHWM") -> float | None:
    """A /proc/PID/status figure (VmRSS, VmHWM) in MB; None once the process has gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    found = [line.split()[1] for line in lines if line.startswith(f"{field}:")]
    return int(found[0]) / 1024 if found else None


def peak_rss_mb(pid: int) -> float:
    peak = memory_mb(pid)
    if peak is None:
        raise RuntimeError("no VmHWM")
    return peak


def healthz(client: httpx.Client, url: str) -> httpx.Response:
    return client.get(f"{url}/healthz")


class Prober(threading.Thread):
    """Sends a request every ``every`` seconds until stopped, and keeps each one's start,
    latency and status (0: no answer)."""

    def __init__(self, url: str, send: Callable[[httpx.Client, str], httpx.Response] = healthz,
                 every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.url, self.send, self.every = url, send, every
        self.samples: list[tuple[float, float, int]] = []
        self.pending: float | None = None  # the start of the request awaiting its answer
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=600) as client:
            while not self.stop.is_set():
                started = self.pending = time.monotonic()
                try:
                    status = self.send(client, self.url).status_code
                except httpx.HTTPError:
                    status = 0
                self.samples.append((started, time.monotonic() - started, status))
                self.pending = None
                self.stop.wait(self.every)

    def during(self, start: float, end: float) -> list[tuple[float, float, int]]:
        """The requests in flight at some time from ``start`` to ``end``; one still awaiting
        its answer counts as taking until now (status -1)."""
        found = [s for s in self.samples if s[0] <= end and s[0] + s[1] >= start]
        pending = self.pending
        if pending is not None and pending <= end:
            found.append((pending, time.monotonic() - pending, -1))
        return found

    def worst(self, start: float, end: float) -> float:
        """The longest latency in ms of the requests in flight from ``start`` to ``end``."""
        return max((s[1] for s in self.during(start, end)), default=0.0) * 1000


# -- sending: raw bytes (round 2), hostile requests (round 3) -----------------------------------
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Request:
    """One hostile request, its body built once and shared by the clients that send it."""

    path: str
    content: bytes | None = None
    headers: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None

    def body_bytes(self) -> int:
        return len(self.content or b"") + sum(len(f[1][1]) for f in self.files or [])

    def send(self, url: str) -> int:
        """The answer's status; 0 when none came (the server closed or was stopped)."""
        try:
            return httpx.post(url + self.path, content=self.content, headers=self.headers,
                              files=self.files, timeout=CASE_TIMEOUT_S + 60).status_code
        except httpx.HTTPError:
            return 0


# -- round 3: watching a run's API --------------------------------------------------------------
def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable")


def reset_peak(pid: int) -> bool:
    """Start the process's VmHWM again from its VmRSS (Linux 4.0+); whether it could."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def start_api(checkout: Path, env: dict[str, str], port: int,
              log: Path) -> subprocess.Popen[bytes]:
    """The checkout's API (its own code: cwd and PYTHONPATH), once /readyz answers 200."""
    return start([sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
                  "--port", str(port)], {**env, "PYTHONPATH": str(checkout)},
                 f"http://127.0.0.1:{port}", log, cwd=checkout)


def await_answers(answers: list[Future[int]], pid: int, max_rss_mb: float) -> str:
    """Wait for every answer, or until the run must be stopped; why it ended."""
    deadline = time.monotonic() + CASE_TIMEOUT_S
    while not all(answer.done() for answer in answers):
        rss = memory_mb(pid, "VmRSS")
        if rss is None:
            return "server exited"
        if rss > max_rss_mb or available_mb() < 1024:
            return f"stopped: server at {rss:.0f} MB"
        if time.monotonic() > deadline:
            return f"timeout ({CASE_TIMEOUT_S} s)"
        time.sleep(0.05)
    return "answered"


def counts(statuses: list[int]) -> dict[str, int]:
    """How many of each status, by name: 'none' for no answer, 'pending' for none yet."""
    names = {0: "none", -1: "pending"}
    return dict(sorted(collections.Counter(names.get(s, str(s)) for s in statuses).items()))


def small_predict(film: bytes) -> Callable[[httpx.Client, str], httpx.Response]:
    return lambda client, url: client.post(f"{url}/predict",
                                           files={"file": ("film.png", film, "image/png")})


def hostile(requests: list[Request], url: str, pid: int, max_rss_mb: float,
            server: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Send ``requests`` at once and wait for their answers, stopping the server if the run
    must stop; their figures and the server's peak while they were in flight."""
    reset = reset_peak(pid)
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = [pool.submit(r.send, url) for r in requests]
        outcome = await_answers(answers, pid, max_rss_mb)
        answered = time.monotonic()
        peak = memory_mb(pid)
        if outcome != "answered":
            server.kill()
        statuses = [a.result() for a in answers]
    return {"outcome": outcome, "statuses": counts(statuses), "answered_at": answered,
            "peak_mb": peak, "peak_reset": reset}

