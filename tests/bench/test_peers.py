"""bench/peers.py's load path against real servers: every peer of bench/peer_servers/ and the
service, each started on the suite's tiny version with an INT8 copy and driven for about a
second at concurrency 2."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.registry.local import LocalRegistry
from tests.helpers.env import AS_ADMIN, REPO
from tests.helpers.services import Service, free_port, start_service

pytestmark = pytest.mark.integration

BENCH = REPO / "bench"
for folder in (BENCH, BENCH / "peer_servers"):  # the driver and the peers run as scripts there
    if str(folder) not in sys.path:
        sys.path.append(str(folder))  # appended: shadows nothing
import peers  # noqa: E402
from contract import PeerArgs  # noqa: E402

PEER_FILES = sorted((BENCH / "peer_servers").glob("*_peer.py"))
# What a peer's log says when its framework is absent on this machine, or (PyTriton) the
# side environment its server needs could not be built; any other failure fails the test.
MISSING = ("ModuleNotFoundError", "ImportError", "could not be built")


@pytest.fixture(scope="module")
def images(radiography_root: Path) -> list[bytes]:
    return [sorted((radiography_root / label / "images").iterdir())[0].read_bytes()
            for label in ("COVID", "Normal", "Viral Pneumonia")]


def classes_of(int8_copy: tuple[LocalRegistry, str]) -> list[str]:
    registry, version = int8_copy
    return list(registry.manifest(version).classes)


def assert_answered(run: Any) -> None:
    statuses = [record[2] for record in run.records]
    assert statuses and set(statuses) == {200}, statuses
    assert run.wrong_shape == 0
    assert len(run.tops) == len(statuses)
    assert run.client_cpu_s > 0


@pytest.mark.parametrize("peer_file", PEER_FILES, ids=[p.stem for p in PEER_FILES])
def test_a_peer_answers_the_drivers_load(peer_file: Path, int8_copy: tuple[LocalRegistry, str],
                                        images: list[bytes], tmp_path: Path) -> None:
    registry, version = int8_copy
    peer = peers.discover_peers()[peer_file.stem.removesuffix("_peer")]
    args = PeerArgs(registry.root, version, "onnx-int8", free_port(), max_batch=4,
                          batch_delay_ms=5)
    log = tmp_path / f"{peer.name}.log"
    try:
        process = peers.start_peer(peer, args, peers.peer_environment(), log, timeout=180)
    except RuntimeError:
        lines = log.read_text(errors="replace").splitlines()
        missing = [line for line in lines if any(word in line for word in MISSING)]
        if missing:
            pytest.skip(f"{peer.name} cannot start here: {missing[-1].strip()}")
        raise
    try:
        run = peers.load(f"http://127.0.0.1:{args.port}", peers.peer_target(peer), images,
                         concurrency=2, seconds=1.0, classes=len(classes_of(int8_copy)),
                         pid=process.pid)
    finally:
        peers.stop(process)
    assert_answered(run)
    assert run.rss_mb > 0  # the process tree was measured while it served
    assert process.poll() is not None


@pytest.fixture
def service(int8_copy: tuple[LocalRegistry, str], tmp_path: Path) -> Iterator[Service]:
    """`cxr serve` on a copy of the INT8 version (activating writes into its models folder),
    in the runtime and precision the driver starts it with."""
    registry, version = int8_copy
    models = tmp_path / "models"
    shutil.copytree(registry.root / version, models / version)
    LocalRegistry(models).activate(version)
    running = start_service(tmp_path, None, processes=("serve",), extra_env={
        "CXR_INFERENCE_RUNTIME": "auto", "CXR_INFERENCE_PRECISION": "auto",
        "CXR_XRAY_GATE": "warn"})
    deadline = time.monotonic() + 120
    while httpx.get(f"{running.url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, running.logs()
        time.sleep(0.2)
    yield running
    running.stop()


def test_the_service_answers_the_drivers_load_on_both_routes(
        service: Service, int8_copy: tuple[LocalRegistry, str], images: list[bytes]) -> None:
    classes = classes_of(int8_copy)
    targets = peers.service_targets(classes, AS_ADMIN)
    assert [t.name for t in targets] == ["cxr /predict", "cxr OIP"]
    pid = service.processes["serve"].pid
    tops = []
    for target in targets:
        run = peers.load(service.url, target, images, concurrency=2, seconds=1.0,
                         classes=len(classes), pid=pid)
        assert_answered(run)
        tops.append(peers.top_classes(service.url, target, images))
    assert tops[0] == tops[1]  # one model behind both routes
