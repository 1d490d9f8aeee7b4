"""Hostile bodies over a raw socket against the running API: a request is judged on its key
and its size before the body is read, chunked bodies are counted as they arrive."""

from __future__ import annotations

import json
import math
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers.env import ADMIN_KEY, READER_KEY
from tests.helpers.services import Service, start_service

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API alone, with image uploads limited to 1 MiB and keys needed for reads."""
    service = start_service(tmp_path_factory.mktemp("hostile"), None, processes=("serve",),
                            extra_env={"CXR_MAX_IMAGE_BYTES": str(MiB),
                                       "CXR_REQUIRE_KEY_FOR_READS": "true"})
    yield service
    service.stop()


def _send(service: Service, head: str, chunks: Iterator[bytes],
          timeout: float = 30) -> tuple[int, dict[str, object], int]:
    """Send ``head`` then ``chunks`` until the server answers; returns the status, the JSON
    error and how many body bytes had been sent when the answer came."""
    address = urlsplit(service.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=timeout)
    sent, answer = 0, b""
    try:
        sock.sendall(head.encode("latin-1"))
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # answered before the body was all sent
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        while b"\r\n\r\n" not in answer or not _complete(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1])
    body = answer.split(b"\r\n\r\n", 1)[1]
    if b"transfer-encoding: chunked" in answer.split(b"\r\n\r\n", 1)[0].lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return status, json.loads(body), sent


def _complete(answer: bytes) -> bool:
    head, body = answer.split(b"\r\n\r\n", 1)
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return body.endswith(b"0\r\n\r\n")


def _fixed(size: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, size, chunk):
        yield b"\0" * min(chunk, size - start)


def _chunked(size: int, chunk: int = 64 * 1024, first: bytes = b"") -> Iterator[bytes]:
    """A chunked body of ``first`` and ``size`` bytes (no Content-Length), then its
    terminating chunk."""
    if first:
        yield f"{len(first):x}\r\n".encode() + first + b"\r\n"
    for piece in _fixed(size, chunk):
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def _head(path: str, host: str, headers: dict[str, str]) -> str:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}",
             *(f"{name}: {value}" for name, value in headers.items())]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize(("path", "key", "status", "code"), [
    ("/datasets", None, 401, "unauthorized"),
    ("/datasets", READER_KEY, 403, "forbidden"),
    ("/retrain", None, 401, "unauthorized"),
    ("/predict", None, 401, "unauthorized"),
])
def test_a_request_without_the_right_key_is_refused_before_its_body(
        api: Service, path: str, key: str | None, status: int, code: str) -> None:
    host = urlsplit(api.url).netloc
    kind = "application/json" if path == "/retrain" else "multipart/form-data; boundary=x"
    headers = {"Content-Type": kind, "Content-Length": str(300 * MiB),
               **({"X-API-Key": key} if key else {})}
    answered, error, sent = _send(api, _head(path, host, headers), _fixed(300 * MiB))
    assert (answered, error["error"]["code"]) == (status, code)  # type: ignore[index]
    assert sent < 8 * MiB  # answered at once, not after 300 MB


@pytest.mark.parametrize(("path", "key", "limit"), [
    ("/predict", READER_KEY, MiB),  # CXR_MAX_IMAGE_BYTES, and a little for the form
    ("/retrain", ADMIN_KEY, MiB),  # CXR_MAX_JSON_BYTES
    ("/datasets", ADMIN_KEY, None),
])
def test_a_declared_size_over_the_routes_limit_is_refused_before_its_body(
        api: Service, path: str, key: str, limit: int | None) -> None:
    host = urlsplit(api.url).netloc
    size = 64 * MiB if limit else 600 * MiB  # CXR_MAX_UPLOAD_BYTES is 512 MiB
    kind = "application/json" if path == "/retrain" else "multipart/form-data; boundary=x"
    headers = {"Content-Type": kind, "Content-Length": str(size), "X-API-Key": key}
    answered, error, sent = _send(api, _head(path, host, headers), _fixed(size))
    assert (answered, error["error"]["code"]) == (413, "payload_too_large")  # type: ignore[index]
    assert sent < 8 * MiB


@pytest.mark.parametrize(("length", "status", "code"), [
    ("0" * 5000 + "2", 422, "validation_error"),  # two bytes: no JSON a retrain accepts
    ("0" * 5000 + "1" * 12, 413, "payload_too_large"),
])
def test_a_declared_size_of_thousands_of_digits_is_read_as_a_number(
        api: Service, length: str, status: int, code: str) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": length,
               "X-API-Key": ADMIN_KEY}
    answered, error, _ = _send(api, _head("/retrain", urlsplit(api.url).netloc, headers),
                               iter([b"{}"]))
    assert (answered, error["error"]["code"]) == (status, code)  # type: ignore[index]


@pytest.mark.parametrize(("path", "key"), [("/predict", READER_KEY), ("/retrain", ADMIN_KEY)])
def test_a_chunked_body_is_counted_as_it_arrives(api: Service, path: str, key: str) -> None:
    host = urlsplit(api.url).netloc
    kind = "application/json" if path == "/retrain" else "multipart/form-data; boundary=x"
    headers = {"Content-Type": kind, "Transfer-Encoding": "chunked", "X-API-Key": key}
    # a form's file part that never ends, or the start of a JSON string that never ends
    first = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
             b"Content-Type: image/png\r\n\r\n" if path == "/predict" else b'{"dataset": "')
    answered, error, sent = _send(api, _head(path, host, headers), _chunked(64 * MiB,
                                                                           first=first))
    assert (answered, error["error"]["code"]) == (413, "payload_too_large")  # type: ignore[index]
    assert sent < 16 * MiB  # refused once past 1 MiB, not after 64 MiB


def test_the_api_answers_normally_after_the_hostile_requests(api: Service) -> None:
    assert httpx.get(f"{api.url}/healthz", timeout=10).status_code == 200
    refused = httpx.post(f"{api.url}/retrain", json={"dataset": "x" * 10},
                         headers={"X-API-Key": ADMIN_KEY}, timeout=10)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "dataset_not_found"


def test_a_huge_header_is_a_431_before_the_head_is_all_sent(api: Service) -> None:
    host = urlsplit(api.url).netloc
    start = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Padding: "
    pieces = (b"a" * (256 * 1024) for _ in range(512))  # 128 MB, never ended
    answered, error, sent = _send(api, start, pieces)
    assert (answered, error["error"]["code"]) == (431, "request_header_fields_too_large")
    assert sent < 4 * MiB


def test_too_many_header_fields_are_a_431(api: Service) -> None:
    host = urlsplit(api.url).netloc
    fields = "".join(f"X-Field-{i}: {i}\r\n" for i in range(500))
    answered, error, _ = _send(api, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n{fields}\r\n",
                               iter(()))
    assert (answered, error["error"]["code"]) == (431, "request_header_fields_too_large")


def test_a_client_that_hangs_up_on_pipelined_requests_is_no_error(api: Service) -> None:
    address = urlsplit(api.url)
    request = f"GET /healthz HTTP/1.1\r\nHost: {address.netloc}\r\n\r\n".encode()
    for _ in range(20):
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(request * 500)
            time.sleep(0.01)
            # a reset, not a polite close: the answers still being sent have nowhere to go
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(1)
    lines = api.log_lines()
    errors = [line for line in lines if line.get("level") == "ERROR" or "exc_info" in line]
    assert not errors, errors[:2]
    assert httpx.get(f"{api.url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize(("path", "kind", "first"), [
    ("/predict", "multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'),
    ("/v2/models/cxr/infer", "application/json", b'{"inputs": [{"name": "IMAGE", '),
])
def test_a_client_that_hangs_up_mid_body_is_logged_as_gone_not_as_an_error(
        api: Service, path: str, kind: str, first: bytes) -> None:
    address = urlsplit(api.url)
    headers = {"Content-Type": kind, "Content-Length": str(MiB // 2), "X-API-Key": READER_KEY}
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(_head(path, address.netloc, headers).encode() + first + b"a" * 65536)
        time.sleep(0.3)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + 10
    while not (answered := [line for line in api.log_lines()
                            if line.get("path") == path and line.get("status") == 499]):
        assert time.monotonic() < deadline, "no access line for the hung-up request"
        time.sleep(0.2)
    assert answered[-1]["error_code"] == "client_disconnected"
    errors = [line for line in api.log_lines() if line.get("level") == "ERROR"]
    assert not errors, errors[:2]


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_concurrent_large_declared_images_are_decoded_within_the_budget(
        tmp_path: Path) -> None:
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from shared.ml.decode_cost import decode_cost
    from shared.registry.local import LocalRegistry
    from tests.helpers.versions import publish_random

    side = 7000  # 49 M pixels: under CXR_MAX_IMAGE_PIXELS (50 M), in a 50 KB PNG
    buffer = io.BytesIO()
    Image.new("L", (side, side), 90).save(buffer, format="PNG")
    png = buffer.getvalue()
    assert len(png) < 200_000
    registry = LocalRegistry(tmp_path / "models")
    registry.activate(publish_random(registry, seed=4))
    # a budget of one such image at a time
    one = math.ceil(decode_cost(png) / MiB)
    service = start_service(tmp_path, None, processes=("serve",),
                            extra_env={"CXR_DECODE_BUDGET_MB": str(one),
                                       "CXR_DECODE_WAIT_S": "120"})
    try:
        with httpx.Client(base_url=service.url, timeout=300) as client:
            while client.get("/readyz").status_code != 200:
                time.sleep(0.2)
            pid = service.processes["serve"].pid
            before = _peak_rss(pid)
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: client.post(
                    "/predict", files={"file": ("big.png", png)}), range(4)))
            grown = _peak_rss(pid) - before
    finally:
        service.stop()
    assert [a.status_code for a in answers] == [200] * 4, answers[0].text
    # One image decoded at a time takes about two float32 copies of it (390 MB); four at
    # once, or freed blocks kept by each thread that decoded (shared/allocator.py), 1.5 GB+.
    assert grown < 3 * side * side * 4, f"peak resident memory grew {grown / MiB:.0f} MiB"

