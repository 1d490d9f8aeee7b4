"""Fixtures shared by the whole suite: real data, settings in a temp folder, Redis, S3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers import scheduling
from tests.helpers.env import (
    API_KEYS,
    IMAGE_DATASET,
    RADIOGRAPHY,
    REDIS_URL,
    REQUIRE_SERVICES,
    S3_ENV,
    SUITE_ENV,
    real_data,
)
from tests.helpers.services import S3Server, SmallDisk
from tests.helpers.versions import (
    Trained,
    copy_tiny,
    shared_trained,
    train_once,
    with_int8_copy,
)

os.environ.update(SUITE_ENV)


@pytest.fixture(scope="session")
def radiography_root() -> Path:
    """The COVID-19 Radiography Database copy (<Class>/images/*.png)."""
    return real_data(RADIOGRAPHY)


@pytest.fixture(scope="session")
def image_dataset_root() -> Path:
    """The small class-folder dataset (JPEG and PNG, RGB or L)."""
    return real_data(IMAGE_DATASET)


@pytest.fixture
def tiny_dataset(radiography_root: Path, tmp_path: Path) -> Path:
    """A 3-class, 12-per-class copy in the radiography layout, in a temp folder."""
    return copy_tiny(radiography_root, tmp_path / "tiny")


@pytest.fixture(scope="session")
def trained(radiography_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The one trained version that the manifest, card, ONNX and schedule checks share
    (read it, never change it: tests that publish or activate use their own registry)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return train_once(radiography_root, tmp_path_factory.mktemp("trained"))
    # the workers' temp folders share a parent: one of them trains, the others reuse it
    return shared_trained(radiography_root, tmp_path_factory.getbasetemp().parent / "trained")


@pytest.fixture(scope="session")
def int8_copy(trained: Trained, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[LocalRegistry, str]:
    """The trained version published again with an INT8 copy kept (read it, never change it)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return with_int8_copy(trained, tmp_path_factory.mktemp("int8-copy"))
    return with_int8_copy(trained, tmp_path_factory.getbasetemp().parent / "int8-copy")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with every folder in a temp dir, the embedded broker and the test keys; no
    ONNX export (the trained version and the ONNX tests have theirs)."""
    return Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models",
                    state_dir=tmp_path / "state", broker_url=None, api_keys=API_KEYS,
                    export_onnx=False)


def _clean_redis() -> Iterator[str]:
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


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A clean Redis database for one test (db 15 by default)."""
    yield from _clean_redis()


@pytest.fixture(scope="module")
def module_redis_url() -> Iterator[str]:
    """A clean Redis database for a module whose tests share one service."""
    yield from _clean_redis()


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


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked here, before `-m` selects: the fixture, not the test, decides.
    if "trained" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.trained_version)
    scheduling.group_with_shared_setup(item)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    scheduling.name_by_test(items)
    scheduling.tag_groups(config, items)
    scheduling.longest_first(items)
