"""Real processes for tests: the API and a worker as `cxr` runs them, a loopback S3 server,
a small filesystem to fill."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.env import API_KEYS_ENV, AS_ADMIN, PROCESS_ENV, REPO


class SmallDisk:
    """A real tmpfs mounted on a folder, so writes hit ENOSPC as on a full disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _mount(self, *options: str) -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                        str(self.path)], check=True, capture_output=True)

    def resize(self, size_bytes: int) -> None:
        """Grow or shrink it in place (rounded up to whole pages); what it holds stays."""
        self._mount("remount", f"size={size_bytes}")

    def used(self) -> int:
        stat = os.statvfs(self.path)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    def unmount(self) -> None:
        subprocess.run(["umount", "--lazy", str(self.path)], check=False, capture_output=True)


class S3Server:
    """moto's S3 API server in its own process on a loopback port."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint)

    def new_bucket(self) -> str:
        name = f"cxr-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


# What TensorFlow's C++ runtime writes to the process's stderr itself, past Python's logging
# (abseil's format, and its notice that it has not been initialized): not JSON, and not ours.
NATIVE = re.compile(r"^([IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] |WARNING: All log messages "
                    r"before absl::InitializeLog\(\) is called)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """The whole system as `cxr serve` and `cxr worker` run it, with its logs."""

    url: str
    env: dict[str, str]
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _terminated: set[int] = field(default_factory=set)  # pids asked to stop

    def start(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        # The API's port as a user gives it on the command line (no CXR_PORT is set).
        options = ["--port", self.url.rsplit(":", 1)[1]] if name == "serve" else []
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "cxr_cli", name, *options], cwd=REPO, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> None:
        """Until its worker says it is ready and its API answers; stopped if either fails."""
        try:
            if "worker" in self.processes:
                wait_for_log(self, "worker", " ready.")
            if "serve" in self.processes:
                wait_healthy(self)
        except RuntimeError:
            self.stop()
            raise

    def terminate(self) -> None:
        """Ask its processes to stop (SIGTERM, once), without waiting for them: the services
        of one test then stop at once."""
        for process in self.processes.values():
            if process.poll() is None and process.pid not in self._terminated:
                process.terminate()
                self._terminated.add(process.pid)

    def stop(self) -> None:
        self.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line its processes logged, each parsed as JSON (CXR_LOG_FORMAT=json, the
        default); a line that is not JSON fails the test."""
        lines = []
        for path in sorted(self.workdir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if line.strip() and not NATIVE.match(line):
                    try:
                        lines.append(json.loads(line))
                    except json.JSONDecodeError:
                        pytest.fail(f"not a JSON log line in {path.name}: {line[:300]!r}")
        return lines

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.workdir.glob("*.log")))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers=AS_ADMIN)


def start_service(tmp_path: Path, broker_url: str | None,
                  extra_env: dict[str, str] | None = None,
                  processes: tuple[str, ...] = ("worker", "serve"),
                  wait: bool = True) -> Service:
    """`cxr worker` and/or `cxr serve` with their folders under ``tmp_path``, once ready
    (``wait``; else started, for ``Service.ready``: several services start at once)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update({
        "CXR_DATA_DIR": str(tmp_path / "data"),
        "CXR_MODELS_DIR": str(tmp_path / "models"), "CXR_STATE_DIR": str(tmp_path / "state"),
        "CXR_RELOAD_INTERVAL_S": "0.5", "CXR_LOG_LEVEL": "info",
        "TF_CPP_MIN_LOG_LEVEL": "2", "CXR_API_KEYS": API_KEYS_ENV, **PROCESS_ENV,
    })
    if broker_url:
        env["CXR_BROKER_URL"] = broker_url
    env.update(extra_env or {})
    service = Service(url=f"http://127.0.0.1:{port}", env=env, workdir=tmp_path)
    for name in processes:
        service.start(name)
    if wait:
        service.ready()
    return service


def wait_healthy(service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API did not start:\n{service.logs()}")


def wait_for_log(service: Service, name: str, text: str, timeout: float = 90) -> None:
    """Until the process's log holds ``text`` (Celery's "celery@host ready.")."""
    deadline = time.monotonic() + timeout
    log = service.workdir / f"{name}.log"
    while time.monotonic() < deadline:
        if log.is_file() and text in log.read_text(errors="replace"):
            return
        if service.processes[name].poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not get ready:\n{service.logs()}")
