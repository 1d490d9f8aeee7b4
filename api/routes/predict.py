"""Predictions from the active model version, batched across concurrent requests."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import Reader
from api.body_guard import GuardedRoute, limited_to
from api.decode_budget import PixelBudget
from api.deps import BatcherDep, DecodeBudgetDep, MetricsDep, ModelServerDep, SettingsDep
from api.errors import responses
from api.serving import ModelServer
from shared.config import Settings
from shared.errors import PayloadTooLarge
from shared.ml.explain import explain as explain_prediction
from shared.ml.preprocessing import DecodedImage, declared_pixels, decode_image
from shared.ml.served import ServedVersion, with_check
from shared.schemas import ChestXrayCheck, Prediction

router = APIRouter(route_class=GuardedRoute, tags=["predict"], dependencies=Reader)


def _budgeted(data: bytes, settings: Settings, budget: PixelBudget) -> Any:
    """The budget held for the image's declared pixels while it is decoded and prepared (one
    over CXR_MAX_IMAGE_PIXELS is refused by the decoder at once: it holds nothing)."""
    pixels = declared_pixels(data)
    return budget.hold(pixels if pixels <= settings.max_image_pixels else 0)


def _decode(data: bytes, settings: Settings, server: ModelServer
            ) -> tuple[ServedVersion, DecodedImage]:
    """Take the serving version (one for the whole request, even across a swap) and decode
    as it was trained; without one, bad input still fails first."""
    model = server.current
    if model is None:
        decode_image(data, settings.max_image_pixels)
        model = server.model()
    return model, model.decode(data, settings.max_image_pixels)


def _prepare(data: bytes, settings: Settings, server: ModelServer, budget: PixelBudget
             ) -> tuple[ServedVersion, np.ndarray, ChestXrayCheck | None]:
    """Decode, prepare as the serving version was trained and pass it through the
    chest-radiograph gate."""
    with _budgeted(data, settings, budget):
        model, image = _decode(data, settings, server)
        return model, *model.screen(image, settings.xray_gate)


def _explain(data: bytes, settings: Settings, server: ModelServer, budget: PixelBudget,
             class_name: str | None) -> tuple[ServedVersion, Prediction]:
    with _budgeted(data, settings, budget):
        model, image = _decode(data, settings, server)
        _, check = model.screen(image, settings.xray_gate)
        return model, with_check(explain_prediction(model, image.gray, class_name), check)


@limited_to("max_image_bytes")
@router.post("/predict", response_model=Prediction,
             responses=responses(400, 401, 413, 415, 422, 503))
async def predict_image(
    response: Response,
    server: ModelServerDep,
    settings: SettingsDep,
    batcher: BatcherDep,
    metrics: MetricsDep,
    budget: DecodeBudgetDep,
    file: Annotated[UploadFile, File(description="A chest X-ray: PNG, JPEG or DICOM.")],
    explain: Annotated[bool, Query(
        description="Also return a Grad-CAM heat map of where the network looked.")] = False,
    explain_class: Annotated[str | None, Query(
        description="The class to map (default: the predicted one); implies explain.")] = None,
) -> Prediction:
    """Classify one chest X-ray with the active model version; an image that is not a chest
    radiograph gets 422 not_a_chest_xray, and an answer that should not be read as a finding
    says so (`reliable`, `reasons`)."""
    data = await file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(f"images are limited to {settings.max_image_bytes} bytes")
    if explain or explain_class is not None:
        # A gradient pass of its own, outside the batcher: it needs the Keras model.
        model, prediction = await run_in_threadpool(_explain, data, settings, server,
                                                    budget, explain_class)
    else:
        # Decoding runs in the threadpool, in parallel with the batcher's forward pass.
        with batcher.arriving():
            model, pixels, check = await run_in_threadpool(_prepare, data, settings, server,
                                                               budget)
            future = batcher.submit(model, pixels)
        prediction = with_check(await asyncio.wrap_future(future), check)
    metrics.predicted(prediction.label)
    response.headers["X-Model-Version"] = model.version
    return prediction
