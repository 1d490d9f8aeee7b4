"""A bound on the memory that images being decoded and prepared take at once, across all
requests.

One image's limit (CXR_MAX_IMAGE_PIXELS) does not bound many at once: a PNG of a hundred
kilobytes may declare 49 M pixels, and a DICOM of the same size may hold a 12-bit frame of as
many, so a few such uploads together could take the API's memory with them. Each image holds
what decoding it will really cost (``shared.ml.decode_cost``: its true frame
size, bit depth and the copies decoding makes) while it is decoded and prepared.

Waiting for room happens on the event loop, never in a worker thread: the threads stay free
for the requests that can go ahead (a small image fits beside large ones and never queues
behind them). A request that finds too many waiting, or waits longer than the wait allowed,
gets 503 ``busy`` with Retry-After.

The work itself runs on the budget's own ``threads`` (``run``), one per core by default: a
thread more than the cores only takes one from the forward pass every image waits for.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import TypeVar

from shared.errors import ServiceBusy

MiB = 1024 * 1024
T = TypeVar("T")


class DecodeBudget:
    def __init__(self, capacity: int, wait_s: float, max_waiting: int,
                 threads: int = 1) -> None:
        self.capacity, self.wait_s, self.max_waiting = capacity, wait_s, max_waiting
        self.threads = threads
        self._used = 0
        self._waiting = 0
        # Made on the loop that waits (a test's app may meet several loops in turn).
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(threads, "decode")

    async def run(self, work: Callable[[], T]) -> T:
        """``work`` on one of the budget's threads (the request's context with it), once one
        is free."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, partial(context.run, work))

    @property
    def used(self) -> int:
        return self._used

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        """Hold ``cost`` bytes of the budget while the block runs (an image costing more than
        all of it waits for it all)."""
        need = max(1, min(cost, self.capacity))
        if self._used + need > self.capacity:
            await self._wait_for(need)
        self._used += need
        try:
            yield
        finally:
            self._used -= need
            if self._waiting:
                changed = self._condition()
                async with changed:
                    changed.notify_all()

    async def _wait_for(self, need: int) -> None:
        if self._waiting >= self.max_waiting:
            raise self._busy(f"{self._waiting} images are waiting to be decoded")
        self._waiting += 1
        changed = self._condition()
        try:
            async with changed:
                await asyncio.wait_for(changed.wait_for(
                    lambda: self._used + need <= self.capacity), self.wait_s)
        except TimeoutError:
            raise self._busy(f"no room to decode for {self.wait_s:g} s") from None
        finally:
            self._waiting -= 1

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._changed is None or self._loop is not loop:
            self._changed, self._loop = asyncio.Condition(), loop
        return self._changed

    def _busy(self, why: str) -> ServiceBusy:
        return ServiceBusy(f"too many large images are being decoded at once ({why}); retry "
                           f"in a few seconds (CXR_DECODE_BUDGET_MB "
                           f"{self.capacity // MiB})")
