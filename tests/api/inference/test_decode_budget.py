"""The decode budget: an image that does not fit waits on the event loop, one that fits goes
ahead, and waiting is bounded (503 busy) in number and in time."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.inference.decode_budget import DecodeBudget
from api.main import create_app
from shared.config import Settings
from shared.errors import ServiceBusy
from shared.registry.local import LocalRegistry
from tests.helpers.versions import publish_random, wait_ready


def test_an_image_that_does_not_fit_waits_and_one_that_fits_goes_ahead() -> None:
    budget = DecodeBudget(100, wait_s=10, max_waiting=4)
    order: list[str] = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def hold(name: str, cost: int, until: asyncio.Event | None = None) -> None:
            async with budget.hold(cost):
                order.append(name)
                if until is not None:
                    await until.wait()

        large = asyncio.create_task(hold("large", 80, release))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(hold("waiting", 50))
        await asyncio.sleep(0.01)
        assert budget.waiting == 1
        await hold("small", 10)  # fits beside the large one: never queues behind the waiter
        assert order == ["large", "small"]
        release.set()
        await asyncio.gather(large, waiting)

    asyncio.run(scenario())
    assert order == ["large", "small", "waiting"]
    assert (budget.used, budget.waiting) == (0, 0)


def test_too_many_waiting_or_too_long_a_wait_is_busy() -> None:
    budget = DecodeBudget(100, wait_s=0.2, max_waiting=1)

    async def scenario() -> list[BaseException | None]:
        async def wait() -> None:
            async with budget.hold(1):
                pass

        async with budget.hold(1000):  # more than all of it: holds it all
            first = asyncio.create_task(wait())
            await asyncio.sleep(0.01)
            with pytest.raises(ServiceBusy, match="1 images are waiting"):
                await wait()  # the second waiter is refused at once
            return list(await asyncio.gather(first, return_exceptions=True))

    (outcome,) = asyncio.run(scenario())
    assert isinstance(outcome, ServiceBusy) and "no room to decode" in outcome.message
    assert (budget.used, budget.waiting) == (0, 0)


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 90).save(buffer, format="PNG")
    return buffer.getvalue()


def test_requests_waiting_for_the_budget_take_no_worker_thread(settings: Settings,
                                                                tmp_path: Path) -> None:
    registry = LocalRegistry(settings.models_dir)
    registry.activate(publish_random(registry, seed=4))
    waiters = 48  # more than the threadpool's 40 threads
    app = create_app(settings.model_copy(update={"decode_wait_s": 60,
                                                 "decode_max_waiting": waiters}))
    budget: DecodeBudget = app.state.decode_budget
    with TestClient(app) as client, ThreadPoolExecutor(waiters) as pool:
        wait_ready(client)
        portal = client.portal
        assert portal is not None
        full = budget.hold(budget.capacity)
        portal.call(full.__aenter__)
        try:
            answers = [pool.submit(client.post, "/predict", files={"file": ("f.png", _png(64))})
                       for _ in range(waiters)]
            while budget.waiting < waiters:
                assert not any(a.done() for a in answers), answers[0].result().text
                anyio.run(anyio.sleep, 0.05)
            threads = portal.call(_borrowed_threads)
            health = client.get("/healthz")
        finally:
            portal.call(full.__aexit__, None, None, None)
        statuses = [a.result().status_code for a in answers]
    assert threads == 0  # all 48 wait on the event loop
    assert health.status_code == 200
    assert statuses == [200] * waiters


async def _borrowed_threads() -> int:
    return int(anyio.to_thread.current_default_thread_limiter().borrowed_tokens)


@pytest.mark.parametrize("threads", [1, 2])
def test_no_more_images_are_decoded_at_once_than_the_budget_has_threads(threads: int) -> None:
    import threading
    import time

    budget = DecodeBudget(100, wait_s=10, max_waiting=4, threads=threads)
    lock, running, most = threading.Lock(), [0], [0]

    def decode() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    async def scenario() -> None:
        await asyncio.gather(*(budget.run(decode) for _ in range(6)))

    asyncio.run(scenario())
    asyncio.run(scenario())  # a second loop, as a test's app may meet
    assert most[0] == threads

