"""Predictions from the active model version, batched across concurrent requests."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import Reader
from api.deps import BatcherDep, MetricsDep, ModelServerDep, SettingsDep
from api.errors import responses
from api.serving import ModelServer
from shared.config import Settings
from shared.errors import PayloadTooLarge
from shared.explain import explain as explain_prediction
from shared.inference import LoadedModel
from shared.preprocessing import decode_grayscale
from shared.schemas import Prediction

router = APIRouter(tags=["predict"], dependencies=Reader)


def _prepare(data: bytes, settings: Settings,
             server: ModelServer) -> tuple[LoadedModel, np.ndarray]:
    """Decode (bad input fails first), take the serving version, prepare as it was trained."""
    gray = decode_grayscale(data, settings.max_image_pixels)
    model = server.model()  # one version for the whole request, even across a swap
    return model, model.pixels(gray)


def _explain(data: bytes, settings: Settings, server: ModelServer,
             class_name: str | None) -> tuple[LoadedModel, Prediction]:
    gray = decode_grayscale(data, settings.max_image_pixels)
    model = server.model()
    return model, explain_prediction(model, gray, class_name)


@router.post("/predict", response_model=Prediction,
             responses=responses(400, 401, 413, 415, 422, 503))
async def predict_image(
    response: Response,
    server: ModelServerDep,
    settings: SettingsDep,
    batcher: BatcherDep,
    metrics: MetricsDep,
    file: Annotated[UploadFile, File(description="A chest X-ray: PNG, JPEG or DICOM.")],
    explain: Annotated[bool, Query(
        description="Also return a Grad-CAM heat map of where the network looked.")] = False,
    explain_class: Annotated[str | None, Query(
        description="The class to map (default: the predicted one); implies explain.")] = None,
) -> Prediction:
    """Classify one chest X-ray with the active model version."""
    data = await file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(f"images are limited to {settings.max_image_bytes} bytes")
    if explain or explain_class is not None:
        # A gradient pass of its own, outside the batcher: it needs the Keras model.
        model, prediction = await run_in_threadpool(_explain, data, settings, server,
                                                    explain_class)
    else:
        # Decoding runs in the threadpool, in parallel with the batcher's forward pass.
        with batcher.arriving():
            model, pixels = await run_in_threadpool(_prepare, data, settings, server)
            future = batcher.submit(model, pixels)
        prediction = await asyncio.wrap_future(future)
    metrics.predicted(prediction.label)
    response.headers["X-Model-Version"] = model.version
    return prediction
