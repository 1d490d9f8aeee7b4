"""A request's images through decoding, the chest-radiograph gate and the batcher: what
``POST /predict`` and the Open Inference Protocol's ``infer`` share.

Every image of a request is answered by one version, taken when the request starts (even
across a hot swap). Each image is decoded in the threadpool under the pixel budget and handed
to the batcher, so the images of one request and those of concurrent requests share forward
passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from api.batching import Batcher
from api.decode_budget import PixelBudget
from api.serving import ModelServer
from shared.config import Settings
from shared.errors import CxrError, NoActiveModel
from shared.ml.explain import explain as explain_prediction
from shared.ml.preprocessing import DecodedImage, declared_pixels, decode_image
from shared.ml.served import ServedVersion, with_check
from shared.schemas import ChestXrayCheck, Prediction


@dataclass(frozen=True)
class Predictor:
    """The parts of the app that answering an image needs."""

    settings: Settings
    server: ModelServer
    batcher: Batcher
    budget: PixelBudget

    def _budgeted(self, data: bytes) -> Any:
        """The budget held for the image's declared pixels while it is decoded and prepared
        (one over CXR_MAX_IMAGE_PIXELS is refused by the decoder at once: it holds nothing)."""
        pixels = declared_pixels(data)
        return self.budget.hold(pixels if pixels <= self.settings.max_image_pixels else 0)

    def _version(self, data: bytes, model: ServedVersion | None) -> ServedVersion:
        """``model``, or the serving version; without one, bad input still fails first."""
        if model is not None:
            return model
        current = self.server.current
        if current is None:
            decode_image(data, self.settings.max_image_pixels)
            current = self.server.model()
        return current

    def _screened(self, data: bytes, model: ServedVersion | None
                  ) -> tuple[ServedVersion, DecodedImage, np.ndarray, ChestXrayCheck | None]:
        """Decoded and prepared as the version was trained, through the gate (call it
        holding the budget)."""
        model = self._version(data, model)
        image = model.decode(data, self.settings.max_image_pixels)
        return model, image, *model.screen(image, self.settings.xray_gate)

    def _prepare(self, data: bytes, model: ServedVersion | None
                 ) -> tuple[ServedVersion, np.ndarray, ChestXrayCheck | None]:
        with self._budgeted(data):
            model, _, pixels, check = self._screened(data, model)
            return model, pixels, check

    def _explain(self, data: bytes, model: ServedVersion | None, class_name: str | None
                 ) -> tuple[ServedVersion, Prediction]:
        with self._budgeted(data):
            model, image, _, check = self._screened(data, model)
            return model, with_check(explain_prediction(model, image.gray, class_name), check)

    async def predict(self, data: bytes, model: ServedVersion | None = None
                      ) -> tuple[ServedVersion, Prediction]:
        """One image's answer, from a batched forward pass."""
        # Decoding runs in the threadpool, in parallel with the batcher's forward pass.
        with self.batcher.arriving():
            served, pixels, check = await run_in_threadpool(self._prepare, data, model)
            future = self.batcher.submit(served, pixels)
        return served, with_check(await asyncio.wrap_future(future), check)

    async def explain(self, data: bytes, model: ServedVersion | None = None,
                      class_name: str | None = None) -> tuple[ServedVersion, Prediction]:
        """One image's answer with its heat map: a gradient pass of its own, outside the
        batcher (it needs the Keras model)."""
        return await run_in_threadpool(self._explain, data, model, class_name)

    async def predict_each(self, images: Sequence[bytes], model: ServedVersion,
                           explain: bool = False, class_name: str | None = None
                           ) -> list[Prediction | CxrError]:
        """Each image's answer, in order, or the error that image alone would have got; all
        of them through the batcher together (heat maps one after another)."""
        async def one(data: bytes) -> Prediction | CxrError:
            try:
                if explain:
                    return (await self.explain(data, model, class_name))[1]
                return (await self.predict(data, model))[1]
            except NoActiveModel:
                raise
            except CxrError as exc:
                return exc

        if explain:  # one gradient pass at a time: together they would only fight for cores
            return [await one(data) for data in images]
        return list(await asyncio.gather(*(one(data) for data in images)))
