"""What bench/peers.py and each peer server agree on: how a peer is started, what one request
for one image looks like, and how its answer names the top class.

Each peer is a file of this folder (``kserve_peer.py``, ...) that defines ``PEER`` (a
``Peer``) without importing its framework, and serves when run as a script with the
arguments ``PeerArgs`` parses. Standard library only: the driver imports every peer's file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def repo_on_path() -> None:
    """Put the checkout on the import path, for the project's packages (``shared``): a peer
    run as a script has only its own folder there."""
    if str(REPO) not in sys.path:
        sys.path.insert(1, str(REPO))


@dataclass(frozen=True)
class PeerArgs:
    """One peer server: the published version it serves, in which runtime, on which port,
    and its batching (the most images a batch gathers, and how long a batch waits)."""

    models_dir: Path
    version: str
    runtime: str  # a candidate of shared.ml.runtimes: "onnx-int8", "openvino", "onnx"
    port: int
    max_batch: int = 16
    batch_delay_ms: float = 5.0
    threads: int | None = None

    def argv(self) -> list[str]:
        argv = ["--models-dir", str(self.models_dir), "--version", self.version,
                "--runtime", self.runtime, "--port", str(self.port),
                "--max-batch", str(self.max_batch), "--batch-delay-ms", str(self.batch_delay_ms)]
        return argv + (["--threads", str(self.threads)] if self.threads else [])

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> PeerArgs:
        parser = argparse.ArgumentParser(description="Serve a published version as a peer.")
        parser.add_argument("--models-dir", type=Path, required=True)
        parser.add_argument("--version", required=True)
        parser.add_argument("--runtime", default="onnx-int8")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--max-batch", type=int, default=16)
        parser.add_argument("--batch-delay-ms", type=float, default=5.0)
        parser.add_argument("--threads", type=int, default=None)
        a = parser.parse_args(argv)
        return cls(a.models_dir, a.version, a.runtime, a.port, a.max_batch, a.batch_delay_ms,
                   a.threads)


@dataclass(frozen=True)
class PeerRequest:
    """One HTTP POST carrying one encoded image (PNG bytes as the file holds them)."""

    path: str
    content: bytes
    headers: dict[str, str]


MULTIPART_BOUNDARY = "cxr-peer-boundary-5b1f"


def multipart_request(image: bytes, path: str = "/predict", field: str = "file",
                      headers: dict[str, str] | None = None) -> PeerRequest:
    """One image as the only part of a multipart/form-data body, as the service's /predict
    takes it, built once rather than by a client library on every request."""
    head = (f"--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"image.png\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + image + f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()
    return PeerRequest(path, body, {
        "content-type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}", **(headers or {})})


class Peer(Protocol):
    """A peer server. It may also say, in a ``batching`` string, how it gathers batches (the
    driver prints it beside its figures; optional, so that older peers still fit)."""

    name: str
    ready_path: str  # answers 200 once the model is loaded

    def command(self, python: str, args: PeerArgs) -> list[str]:
        """The command line that starts this peer's server (run in the checkout's root)."""
        ...

    def request(self, image: bytes) -> PeerRequest:
        """The request that asks for ``image``'s class probabilities."""
        ...

    def top_class(self, body: bytes) -> int:
        """The index of the most probable class in an answer's body."""
        ...
