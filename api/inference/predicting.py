"""A request's images through the one answering path (``ServedVersion.submit_images``): what
``POST /predict`` and the Open Inference Protocol's ``infer`` share, for one image or many.

Every image of a request is answered by one version, taken when the request starts (even
across a hot swap). The request's images are decoded in one threadpool thread, one after
another, each under the pixel budget, and handed to the batcher as each is ready, so they
share forward passes with each other and with concurrent requests; the answers are awaited
off the threadpool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from api.inference.batching import Batcher
from api.inference.decode_budget import PixelBudget
from api.inference.serving import ModelServer
from shared.config import Settings
from shared.errors import CxrError
from shared.ml.explain import GradCamPasses
from shared.ml.preprocessing import declared_pixels, decode_image
from shared.ml.screening import ImageLimits, Screened
from shared.ml.served import Passes, ServedVersion
from shared.schemas import Prediction


@dataclass(frozen=True)
class BatcherPasses:
    """The batcher as the answering path's passes: it keeps only the pixels it scores."""

    batcher: Batcher

    def submit(self, model: ServedVersion, screened: Screened) -> Future[Prediction]:
        return self.batcher.submit(model, screened.pixels)

    def flush(self) -> None:
        """Nothing: the batcher sends a batch once it is full or nobody else is coming."""


@dataclass(frozen=True)
class Predictor:
    """The parts of the app that answering images needs."""

    settings: Settings
    server: ModelServer
    batcher: Batcher
    budget: PixelBudget

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits.from_settings(self.settings)

    def _budgeted(self, data: bytes) -> AbstractContextManager[object]:
        """The budget held for the image's declared pixels while it is decoded and prepared
        (one over CXR_MAX_IMAGE_PIXELS is refused by the decoder at once: it holds nothing)."""
        pixels = declared_pixels(data)
        return self.budget.hold(pixels if pixels <= self.settings.max_image_pixels else 0)

    async def serving(self, images: Sequence[bytes]) -> ServedVersion:
        """The version served now, which answers the whole request; without one, bad input
        still fails first (its own 4xx), then NoActiveModel."""
        current = self.server.current
        if current is None:
            await run_in_threadpool(self._decode_each, images)
            current = self.server.model()
        return current

    def _decode_each(self, images: Sequence[bytes]) -> None:
        for data in images:
            with self._budgeted(data):
                decode_image(data, self.settings.max_image_pixels)

    async def answer(self, images: Sequence[bytes], model: ServedVersion,
                     explain: bool = False, class_name: str | None = None
                     ) -> list[Prediction | CxrError]:
        """Each image's answer from ``model``, or the error that image alone would get, in
        order; with ``explain``, each with its heat map (class ``class_name``, else the
        predicted one) from a gradient pass of its own, outside the batcher."""
        passes: Passes = GradCamPasses(class_name) if explain else BatcherPasses(self.batcher)
        # Announced while its images are prepared, a request is waited for by a gathering
        # batch (briefly); heat maps never enter a batch.
        with nullcontext() if explain else self.batcher.arriving():
            futures = await run_in_threadpool(model.submit_images, images, self.limits,
                                              passes, self._budgeted)
        answers: list[Prediction | CxrError] = []
        for future in futures:
            try:
                prediction = await asyncio.wrap_future(future)
            except CxrError as exc:
                answers.append(exc)
            else:
                answers.append(prediction)
        return answers
