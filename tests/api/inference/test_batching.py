"""Dynamic batching is correct: each request gets what an unbatched pass gives its image."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.inference.batching import Batcher
from api.main import create_app
from shared.config import Settings
from shared.loading import load_version
from shared.ml.preprocessing import decode_grayscale
from shared.ml.served import ServedVersion
from shared.registry import Registry
from shared.registry.local import LocalRegistry
from shared.schemas import Prediction
from tests.helpers.env import sample_files
from tests.helpers.versions import publish_random, wait_ready


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = LocalRegistry(tmp_path_factory.mktemp("models"))
    for seed in (1, 2):
        publish_random(registry, seed)
    return registry


@pytest.fixture(scope="module")
def models(registry: Registry) -> list[ServedVersion]:
    # The batch size a version measured fastest is tested below; elsewhere the batcher's own
    # limits are under test, so no version caps them.
    return [replace(load_version(registry, m.version), batch_size=64)
            for m in registry.versions()]


@pytest.fixture(scope="module")
def images(radiography_root: Path) -> list[bytes]:
    return [path.read_bytes() for paths in sample_files(radiography_root, 4).values()
            for path in paths]


@pytest.fixture
def batcher() -> Iterator[Batcher]:
    batcher = Batcher(max_size=8, max_delay_s=0.05)
    batcher.start()
    yield batcher
    batcher.stop()


def _same(batched: Prediction, alone: Prediction) -> None:
    assert batched.label == alone.label and batched.model_version == alone.model_version
    for label, p in alone.probabilities.items():
        assert batched.probabilities[label] == pytest.approx(p, abs=1e-5)


def test_each_request_gets_exactly_its_unbatched_answer(
        batcher: Batcher, models: list[ServedVersion], images: list[bytes]) -> None:
    model = models[0]
    pixels = [model.pixels(decode_grayscale(data, 10**8)) for data in images]
    with ThreadPoolExecutor(len(pixels)) as pool:  # concurrent submitters
        futures = list(pool.map(lambda p: batcher.submit(model, p), pixels))
    answers = [future.result(timeout=60) for future in futures]
    assert max(batcher.batch_sizes) > 1  # they really were batched
    for p, answer in zip(pixels, answers, strict=True):
        _same(answer, model.predict_batch(p[None])[0])


def test_batches_respect_the_cap_and_the_versions_own_batch_size(
        models: list[ServedVersion]) -> None:
    model = models[0]
    pixels = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    batcher = Batcher(max_size=4, max_delay_s=0.3)
    # queued before the thread starts: all 10 are waiting when it looks
    futures = [batcher.submit(model, pixels) for _ in range(10)]
    batcher.start()
    try:
        for future in futures:
            future.result(timeout=60)
        assert list(batcher.batch_sizes) == [4, 4, 2]
        # this version measured fastest per image at batches of 3
        capped = replace(model, batch_size=3)
        futures = [batcher.submit(capped, pixels) for _ in range(7)]
        for future in futures:
            future.result(timeout=60)
        assert list(batcher.batch_sizes)[3:] == [3, 3, 1]
    finally:
        batcher.stop()


def test_a_batch_waits_for_announced_requests_and_only_for_them(
        models: list[ServedVersion]) -> None:
    model = models[0]
    pixels = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    batcher = Batcher(max_size=8, max_delay_s=0.5)
    batcher.start()
    try:
        # alone, nothing else on its way: sent at once, not at its deadline
        batcher.submit(model, pixels).result(timeout=60)
        model.predict_batch(pixels[None])  # the same pass, unbatched (first calls are done)
        started = time.monotonic()
        batcher.submit(model, pixels).result(timeout=60)
        alone = time.monotonic() - started
        # another request announced and never submitted (still decoding): the deadline
        with batcher.arriving():
            started = time.monotonic()
            batcher.submit(model, pixels).result(timeout=60)
            waited = time.monotonic() - started
        assert list(batcher.batch_sizes) == [1, 1, 1]
        assert waited >= 0.5 > alone
        # an announced request that arrives in time joins the batch, which leaves when no
        # other request is on its way
        with batcher.arriving():
            with batcher.arriving():
                first = batcher.submit(model, pixels)
            time.sleep(0.1)
            second = batcher.submit(model, pixels)
        for future in (first, second):
            future.result(timeout=60)
        assert list(batcher.batch_sizes)[-1] == 2
    finally:
        batcher.stop()


def test_requests_of_two_versions_are_never_mixed_in_one_batch(
        batcher: Batcher, models: list[ServedVersion]) -> None:
    pixels = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    futures = [(model, batcher.submit(model, pixels)) for _ in range(6) for model in models]
    for model, future in futures:
        _same(future.result(timeout=60), model.predict_batch(pixels[None])[0])
    assert sum(batcher.batch_sizes) == 12 and len(batcher.batch_sizes) >= 2


def test_stopping_finishes_what_is_queued(models: list[ServedVersion]) -> None:
    batcher = Batcher(max_size=2, max_delay_s=0.0)
    pixels = np.zeros((32, 32, 3), np.float32)
    futures = [batcher.submit(models[0], pixels) for _ in range(5)]
    batcher.start()
    batcher.stop()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(RuntimeError, match="stopping"):
        batcher.submit(models[0], pixels)


def test_over_http_an_invalid_image_fails_alone_in_a_batch_window(
        registry: Registry, models: list[ServedVersion], images: list[bytes],
        tmp_path: Path) -> None:
    version = models[0].version
    registry.activate(version)
    settings = Settings(models_dir=registry.root, state_dir=tmp_path / "state",
                        data_dir=tmp_path / "data", batch_max_size=8, batch_max_delay_ms=200)
    bodies = [(data, True) for data in images] + [(b"not an image", False)] * 4
    bodies = bodies[::2] + bodies[1::2]  # interleave the bad ones with the good ones
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        # whatever batch size the version measured fastest here, let this test batch
        server = client.app.state.model_server  # type: ignore[attr-defined]
        server.current = replace(server.current, batch_size=8)

        def post(body: bytes) -> tuple[int, dict]:  # type: ignore[type-arg]
            response = client.post("/predict", files={"file": ("x.png", body)})
            return response.status_code, response.json()

        with ThreadPoolExecutor(len(bodies)) as pool:
            results = list(pool.map(post, [data for data, _ in bodies]))
        batch_sizes = list(client.app.state.batcher.batch_sizes)  # type: ignore[attr-defined]
    assert max(batch_sizes) > 1
    for (data, valid), (status, body) in zip(bodies, results, strict=True):
        if not valid:
            assert status == 400 and body["error"]["code"] == "invalid_image"
            continue
        assert status == 200, body
        _same(Prediction(**body), models[0].predict(decode_grayscale(data, 10**8)))


def test_a_swap_during_a_burst_loses_no_request(registry: Registry, batcher: Batcher) -> None:
    import threading

    from api.inference.serving import ModelServer

    versions = sorted(m.version for m in registry.versions())
    registry.activate(versions[0])
    server = ModelServer(registry, poll_interval_s=0.05)
    server.check()
    pixels = np.random.default_rng(2).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    taken: list[tuple[str, Prediction]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            model = server.model()
            try:
                taken.append((model.version, batcher.submit(model, pixels).result(timeout=60)))
            except BaseException as exc:  # collected; asserted below
                failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        for i in range(4):
            registry.activate(versions[(i + 1) % 2])
            server.check()
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert {version for version, _ in taken} == set(versions)
    assert all(answer.model_version == version for version, answer in taken)


def test_an_idle_batcher_holds_no_version(batcher: Batcher, registry: Registry) -> None:
    import gc
    import weakref

    model = load_version(registry, registry.versions()[0].version)
    pixels = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    batcher.submit(model, pixels).result(timeout=60)
    gone = weakref.ref(model)
    del model
    deadline = time.monotonic() + 5  # the thread finishes its pass, then waits for more
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert gone() is None  # a replaced version can be released while traffic is quiet
