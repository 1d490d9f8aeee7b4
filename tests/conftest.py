"""Fixtures shared by the whole suite: real data, settings in a temp folder, Redis."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.config import ApiKey, Settings, key_digest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
RADIOGRAPHY = SHARED_DATA / "covid19-radiography"
IMAGE_DATASET = SHARED_DATA / "covid19-image-dataset"
REDIS_URL = os.environ.get("CXR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# CI sets this so that a missing Redis fails the run instead of skipping tests.
REQUIRE_SERVICES = os.environ.get("CXR_TEST_REQUIRE_SERVICES") == "1"
# API keys of the test services: mutating endpoints always need an admin one.
ADMIN_KEY, READER_KEY = "test-admin-key-7f3c", "test-reader-key-91ab"
API_KEYS = [ApiKey(name=name, sha256=key_digest(key), role=name)
            for name, key in (("admin", ADMIN_KEY), ("reader", READER_KEY))]
API_KEYS_ENV = json.dumps([key.model_dump() for key in API_KEYS])  # CXR_API_KEYS
AS_ADMIN = {"X-API-Key": ADMIN_KEY}
# The suite trains versions on a few dozen images, whose test balanced accuracy interval
# includes chance; the promotion gate would keep every one of them a candidate. The tests of
# that refusal turn it back on; everything else (in process and in the services it starts)
# needs its tiny versions activated.
TINY_VERSIONS_ENV = {"CXR_PROMOTION_REFUSE_CHANCE": "false"}
os.environ.update(TINY_VERSIONS_ENV)


def _need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"real X-rays not found at {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture(scope="session")
def radiography_root() -> Path:
    """The COVID-19 Radiography Database copy (<Class>/images/*.png)."""
    return _need(RADIOGRAPHY)


@pytest.fixture(scope="session")
def image_dataset_root() -> Path:
    """The small class-folder dataset (JPEG and PNG, RGB or L)."""
    return _need(IMAGE_DATASET)


def sample_files(root: Path, per_class: int) -> dict[str, list[Path]]:
    """The first ``per_class`` images of each class of the radiography layout."""
    return {c.name: sorted((c / "images").iterdir())[:per_class]
            for c in sorted(root.iterdir()) if (c / "images").is_dir()}


@pytest.fixture
def tiny_dataset(radiography_root: Path, tmp_path: Path) -> Path:
    """A 3-class, 12-per-class copy in the radiography layout, in a temp folder."""
    target = tmp_path / "tiny"
    for label, files in sample_files(radiography_root, 12).items():
        (target / label / "images").mkdir(parents=True)
        for path in files:
            shutil.copy(path, target / label / "images" / path.name)
    return target


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with every folder in a temp dir, the embedded broker and the test keys."""
    return Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models",
                    state_dir=tmp_path / "state", broker_url=None, api_keys=API_KEYS)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A clean Redis database for one test (db 15 by default)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if REQUIRE_SERVICES:
            raise
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """``tmp_path/disk`` on its own 256 MB tmpfs (mounting needs root: CI has it)."""
    disk = SmallDisk(tmp_path / "disk")
    disk.path.mkdir()
    try:
        disk._mount("size=256m", "mode=0755")
    except (OSError, subprocess.CalledProcessError) as exc:
        if REQUIRE_SERVICES:
            raise
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {exc}")
    yield disk
    disk.unmount()


# Credentials of the loopback S3 server; moto accepts any, boto3 needs some.
S3_ENV = {"AWS_ACCESS_KEY_ID": "cxr-test", "AWS_SECRET_ACCESS_KEY": "cxr-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 API (moto in server mode), started once for the session."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        if REQUIRE_SERVICES:
            raise RuntimeError(f"moto_server is not installed next to {sys.executable}")
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]')")
    for name, value in S3_ENV.items():
        os.environ.setdefault(name, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = S3Server(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            server.client().list_buckets()
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    yield server
    process.terminate()
    process.wait(timeout=10)
