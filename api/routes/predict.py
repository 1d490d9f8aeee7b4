"""Predictions from the active model version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile

from api.deps import ModelServerDep, SettingsDep
from api.errors import responses
from shared.errors import PayloadTooLarge
from shared.preprocessing import decode_grayscale
from shared.schemas import Prediction

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=Prediction,
             responses=responses(400, 413, 415, 422, 503))
def predict_image(
    response: Response,
    server: ModelServerDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="A PNG or JPEG chest X-ray.")],
) -> Prediction:
    """Classify one chest X-ray with the active model version."""
    # A sync handler: decoding and the forward pass run in the threadpool, off the event loop.
    data = file.file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(f"images are limited to {settings.max_image_bytes} bytes")
    gray = decode_grayscale(data, settings.max_image_pixels)  # bad input fails first
    model = server.model()  # one reference for the whole request, even across a swap
    prediction = model.predict(gray)
    response.headers["X-Model-Version"] = model.version
    return prediction
