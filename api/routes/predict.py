"""Predictions from the active model version, batched across images and requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Header, Query, Response, UploadFile

from api.deps import AnswerLogDep, PredictorDep, ServiceMetricsDep, SettingsDep
from api.monitoring.observe import SOURCE_HEADER, source_of
from api.plumbing.auth import Reader
from api.plumbing.body_guard import GuardedRoute, limited_to
from api.plumbing.errors import responses, status_of
from shared.config import Settings
from shared.errors import CxrError, PayloadTooLarge, TooManyImages
from shared.schemas import ErrorDetail, ExplainLayer, ImageAnswer, Prediction, Predictions

router = APIRouter(route_class=GuardedRoute, tags=["predict"], dependencies=Reader)


async def _read(files: list[UploadFile], settings: Settings) -> list[bytes]:
    if len(files) > settings.max_images_per_request:
        raise TooManyImages(f"{len(files)} images in one request; the limit is "
                            f"{settings.max_images_per_request} (CXR_MAX_IMAGES_PER_REQUEST)")
    images, left = [], settings.max_image_bytes
    for upload in files:
        data = await upload.read(left + 1)
        left -= len(data)
        if left < 0:
            raise PayloadTooLarge(f"images are limited to {settings.max_image_bytes} bytes "
                                  "per request, all of them together")
        images.append(data)
    return images


@limited_to("max_image_bytes")
@router.post("/predict", response_model=Prediction | Predictions,
             responses=responses(400, 401, 413, 415, 422, 503))
async def predict_image(
    response: Response,
    settings: SettingsDep,
    predictor: PredictorDep,
    metrics: ServiceMetricsDep,
    answer_log: AnswerLogDep,
    file: Annotated[list[UploadFile], File(description=(
        "A chest X-ray: PNG, JPEG or DICOM. Several `file` parts (up to "
        "CXR_MAX_IMAGES_PER_REQUEST) get one answer each, in order."))],
    explain: Annotated[bool, Query(
        description="Also return a Grad-CAM heat map of where the network looked.")] = False,
    explain_class: Annotated[str | None, Query(
        description="The class to map (default: the predicted one); implies explain.")] = None,
    explain_layer: Annotated[ExplainLayer | None, Query(description=(
        "The convolution to map; implies explain. Its grid is 1/16 of the version's size a "
        "side for block5_conv3, 1/8 for block4_conv3, 1/4 for block3_conv3. Default `auto`: "
        "block5_conv3 where that grid is at least 8 cells a side (128 px and up), else the "
        "deepest layer whose grid is (block4_conv3 at 64 px)."))] = None,
    source: Annotated[str | None, Header(alias=SOURCE_HEADER, description=(
        "Who sends the image, as the prediction log records it: `page` (the web page) or "
        "`cli`; absent or anything else: `api`."))] = None,
) -> Prediction | Predictions:
    """Classify chest X-rays with the active model version.

    One image: its answer, or its error as the request's (an image that is not a chest
    radiograph gets 422 not_a_chest_xray). Several: 200 with one entry per image in order,
    each its answer or the error it alone would have got, all answered by one version. An
    answer that should not be read as a finding says so (`reliable`, `reasons`). Each answer
    has its `prediction_id` in the prediction log, which a label names."""
    images = await _read(file, settings)
    model = await predictor.serving(images)
    explained = explain or explain_class is not None or explain_layer is not None
    answers = await predictor.answer(images, model, explained, explain_class,
                                     explain_layer or "auto")
    for answer in answers:
        if isinstance(answer, Prediction):
            metrics.predicted(answer.label)
    answer_log.answered(answers, images, source_of(source))
    response.headers["X-Model-Version"] = model.version  # an error's own answer lacks it
    if len(answers) == 1:
        (answer,) = answers
        if isinstance(answer, CxrError):  # one image: its error is the request's
            raise answer
        return answer
    return Predictions(model_version=model.version, images=[
        ImageAnswer(index=index, filename=upload.filename, status=200, prediction=answer)
        if isinstance(answer, Prediction) else
        ImageAnswer(index=index, filename=upload.filename, status=status_of(answer),
                    error=ErrorDetail(code=answer.code, message=answer.message))
        for index, (upload, answer) in enumerate(zip(file, answers, strict=True))])
