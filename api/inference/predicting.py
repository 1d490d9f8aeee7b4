"""A request's images through the one answering path (``ServedVersion.submit_images``): what
``POST /predict`` and the Open Inference Protocol's ``infer`` share, for one image or many.

Every image of a request is answered by one version, taken when the request starts (even
across a hot swap). The request's images are decoded one after another, each on one of the
decode budget's threads (the wait for room, and for a thread, is on the event loop), and
handed to the batcher as each is ready, so they share forward passes with each other and with
concurrent requests; the answers are awaited on the event loop, holding no thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import ParamSpec, TypeVar

from api.inference.batching import Batcher
from api.inference.decode_budget import DecodeBudget, MiB
from api.inference.serving import ModelServer
from shared.allocator import release_freed_memory
from shared.config import Settings
from shared.errors import CxrError
from shared.ml.decode_cost import decode_cost
from shared.ml.explain import GradCamPasses
from shared.ml.preprocessing import decode_image
from shared.ml.screening import ImageLimits, Screened, failed
from shared.ml.served import Passes, ServedVersion
from shared.schemas import ExplainLayer, Prediction

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class BatcherPasses:
    """The batcher as the answering path's passes: it keeps only the pixels it scores."""

    batcher: Batcher

    def submit(self, model: ServedVersion, screened: Screened) -> Future[Prediction]:
        return self.batcher.submit(model, screened.pixels, screened.inputs)

    def flush(self) -> None:
        """Nothing: the batcher sends a batch once it is full or nobody else is coming."""


@dataclass(frozen=True)
class Predictor:
    """The parts of the app that answering images needs."""

    settings: Settings
    server: ModelServer
    batcher: Batcher
    budget: DecodeBudget

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits.from_settings(self.settings)

    async def serving(self, images: Sequence[bytes]) -> ServedVersion:
        """The version served now, which answers the whole request; without one, bad input
        still fails first (its own 4xx), then NoActiveModel."""
        current = self.server.current
        if current is None:
            for data in images:
                await self._budgeted(data, None, decode_image, data,
                                     self.settings.max_image_pixels)
            current = self.server.model()
        return current

    async def answer(self, images: Sequence[bytes], model: ServedVersion,
                     explain: bool = False, class_name: str | None = None,
                     layer: ExplainLayer = "auto") -> list[Prediction | CxrError]:
        """Each image's answer from ``model``, or the error that image alone would get, in
        order; with ``explain``, each with its heat map (class ``class_name``, else the
        predicted one; on ``layer``) from a gradient pass of its own, outside the batcher."""
        passes: Passes = (GradCamPasses(class_name, layer) if explain
                          else BatcherPasses(self.batcher))
        futures: list[Future[Prediction]] = []
        # Announced while its images are prepared, a request is waited for by a gathering
        # batch (briefly); heat maps never enter a batch.
        with nullcontext() if explain else self.batcher.arriving():
            for data in images:
                try:
                    futures += await self._budgeted(data, model, model.submit_images, [data],
                                                    self.limits, passes)
                except CxrError as exc:  # no room in the budget: this image alone fails
                    futures.append(failed(exc))
        answers: list[Prediction | CxrError] = []
        for future in futures:
            try:
                prediction = await asyncio.wrap_future(future)
            except CxrError as exc:
                answers.append(exc)
            else:
                answers.append(prediction)
        return answers

    async def _budgeted(self, data: bytes, model: ServedVersion | None, work: Callable[P, T],
                        *args: P.args, **kwargs: P.kwargs) -> T:
        """``work`` on the budget's threads while the budget holds what decoding ``data`` for
        ``model`` (None: at full size, unprepared) costs; the wait for room is on the event
        loop. An image the decoder refuses from its header holds nothing."""
        floor = model.options.decode_floor(model.image_size) if model else 0
        equalize = model.options.equalize if model else "none"
        cost = await self.budget.run(partial(decode_cost, data, floor,
                                             self.settings.max_image_pixels,
                                             equalize=equalize))
        async with self.budget.hold(cost):
            return await self.budget.run(partial(_then_release, cost, self._release_after,
                                                 partial(work, *args, **kwargs)))

    @property
    def _release_after(self) -> int:
        return self.settings.release_memory_after_mb * MiB


def _then_release(cost: int, release_after: int, work: Callable[[], T]) -> T:
    """``work``, then, after a large image, what it freed handed back to the system."""
    try:
        return work()
    finally:
        if release_after and cost >= release_after:
            release_freed_memory()
