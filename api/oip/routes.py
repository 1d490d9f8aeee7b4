"""The Open Inference Protocol (KServe v2; Triton's HTTP/REST API) beside the service's own
routes, so that clients written for it (tritonclient, KServe's) can ask the model.

One model, ``cxr``. Its input IMAGE is a BYTES tensor of encoded images (PNG, JPEG or DICOM),
shape [n]; its outputs are each image's PROBABILITIES (in the order of the metadata's
``parameters.classes``), LABEL, RELIABLE and REASONS (comma-separated, empty when reliable),
and SHIFT_SCORE for versions with a shift reference. The answers are ``POST /predict``'s, by
the same path (api/inference/predicting.py); the response's ``parameters.prediction_id`` names
each image's answer in the prediction log, comma-separated in the order of the images (the
protocol's parameters are strings, numbers or booleans, never lists). Errors take the
protocol's shape, ``{"error": message}``, with the status and stable ``code`` the rest of
the API uses.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import (
    AnswerLogDep,
    ModelServerDep,
    PredictorDep,
    RegistryDep,
    ServiceMetricsDep,
    SettingsDep,
    VersionCacheDep,
)
from api.inference.predicting import Predictor
from api.metrics import ServiceMetrics
from api.monitoring.observe import AnswerLog
from api.oip.codec import (
    HEADER_LENGTH,
    InferRequest,
    InvalidInferRequest,
    byte_elements,
    encode_response,
    split_body,
)
from api.oip.refusals import ProtocolRoute, errors, refusal
from api.oip.signature import (
    OUTPUTS,
    REQUEST_BODY,
    Live,
    ModelMetadata,
    ModelParameters,
    ModelReady,
    Ready,
    ServerMetadata,
    TensorMetadata,
    outputs_of,
    selected,
    tensors,
)
from api.plumbing.auth import Reader
from api.plumbing.body_guard import limited_to
from api.plumbing.errors import status_of
from shared.config import Settings
from shared.errors import CxrError, ModelNotFound, PayloadTooLarge, UnsupportedImageFormat
from shared.manifest import Manifest
from shared.ml.served import ServedVersion
from shared.registry import Registry
from shared.registry.files import SHIFT_FILE
from shared.schemas import Prediction

MODEL = "cxr"
INPUT = "IMAGE"

TAGS: list[str | Enum] = ["open inference protocol"]
# 422: what FastAPI would document for any route with a path parameter, in this shape.
router = APIRouter(route_class=ProtocolRoute, prefix="/v2", tags=TAGS, dependencies=Reader,
                   responses=errors(401, 422))
# Liveness and readiness need no key, as /healthz and /readyz: probes carry none.
health_router = APIRouter(route_class=ProtocolRoute, prefix="/v2", tags=TAGS)


@lru_cache(maxsize=1)
def _package_version() -> str:
    try:
        return package_version("cxr-service")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _known(model_name: str) -> None:
    if model_name != MODEL:
        raise ModelNotFound(f"no model {model_name!r}; this server has one, {MODEL!r}")


@health_router.get("/health/live", response_model=Live)
async def get_live() -> Live:
    """The server is alive."""
    return Live(live=True)


@health_router.get("/health/ready", response_model=Ready, responses={503: {"model": Ready}})
def get_ready(server: ModelServerDep) -> JSONResponse:
    """Ready when a model version is served."""
    ready = server.current is not None
    return JSONResponse(Ready(ready=ready).model_dump(), status_code=200 if ready else 503)


@health_router.get("", response_model=ServerMetadata)
def get_server_metadata() -> ServerMetadata:
    """The server's name, version and protocol extensions."""
    return ServerMetadata(name="cxr-service", version=_package_version(),
                          extensions=["binary_tensor_data"])


def _metadata(manifest: Manifest, loaded: ServedVersion | None, served: bool,
              registry: Registry) -> ModelMetadata:
    classes = list(manifest.classes)
    return ModelMetadata(
        name=MODEL, versions=[m.version for m in registry.versions()],
        platform=f"{loaded.runtime}_{loaded.precision}" if loaded else "keras",
        inputs=[TensorMetadata(name=INPUT, datatype="BYTES", shape=[-1])],
        outputs=[TensorMetadata(name=name, datatype=OUTPUTS[name],
                                shape=[-1, len(classes)] if name == "PROBABILITIES" else [-1])
                 for name in outputs_of(SHIFT_FILE in manifest.files)],
        parameters=ModelParameters(
            version=manifest.version, classes=classes, image_size=manifest.image_size,
            served=served, loaded=loaded is not None,
            runtime=loaded.runtime if loaded else None,
            precision=loaded.precision if loaded else None))


@router.get("/models/{model_name}", response_model=ModelMetadata,
            response_model_exclude_none=True, responses=errors(404, 503))
def get_model_metadata(model_name: str, server: ModelServerDep,
                       registry: RegistryDep) -> ModelMetadata:
    """The served version's inputs, outputs and classes, and every published version."""
    _known(model_name)
    model = server.model()
    return _metadata(registry.manifest(model.version), model, True, registry)


@router.get("/models/{model_name}/versions/{version}", response_model=ModelMetadata,
            response_model_exclude_none=True, responses=errors(404))
def get_version_metadata(model_name: str, version: str, registry: RegistryDep,
                         server: ModelServerDep, cache: VersionCacheDep) -> ModelMetadata:
    """A published version's inputs, outputs and classes."""
    _known(model_name)
    manifest = registry.manifest(version)
    current = server.current
    served = current is not None and current.version == version
    return _metadata(manifest, cache.loaded(version), served, registry)


@router.get("/models/{model_name}/ready", response_model=ModelReady,
            responses={**errors(404), 503: {"model": ModelReady}})
def get_model_ready(model_name: str, server: ModelServerDep) -> JSONResponse:
    """Ready when a version is served."""
    _known(model_name)
    ready = server.current is not None
    return JSONResponse(ModelReady(name=MODEL, ready=ready).model_dump(),
                        status_code=200 if ready else 503)


@router.get("/models/{model_name}/versions/{version}/ready", response_model=ModelReady,
            responses=errors(404))
def get_version_ready(model_name: str, version: str, registry: RegistryDep) -> ModelReady:
    """Ready when the version is published: one not in memory is loaded by its first infer."""
    _known(model_name)
    registry.manifest(version)
    return ModelReady(name=MODEL, ready=True)


INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON, or with binary outputs the JSON (its length in the "
                         f"{HEADER_LENGTH} header) followed by their data.",
          "content": {"application/json": {}, "application/octet-stream": {}}},
    **errors(400, 404, 413, 415, 422, 503)}


@limited_to("max_image_bytes")
@router.post("/models/{model_name}/infer", response_class=Response,
             responses=INFER_RESPONSES, openapi_extra=REQUEST_BODY)
async def infer(model_name: str, request: Request, settings: SettingsDep,
                predictor: PredictorDep, metrics: ServiceMetricsDep,
                answer_log: AnswerLogDep) -> Response:
    """Classify the IMAGE tensor's images with the served version."""
    _known(model_name)
    parsed, images = await _read(request, settings)
    model = await predictor.serving(images)
    return await _answer(parsed, images, model, predictor, metrics, answer_log)


@limited_to("max_image_bytes")
@router.post("/models/{model_name}/versions/{version}/infer", response_class=Response,
             responses=INFER_RESPONSES, openapi_extra=REQUEST_BODY)
async def infer_version(model_name: str, version: str, request: Request,
                        settings: SettingsDep, predictor: PredictorDep, metrics: ServiceMetricsDep,
                        cache: VersionCacheDep, answer_log: AnswerLogDep) -> Response:
    """Classify with a named published version: a candidate the promotion decision kept back,
    or an older one; one not in memory is loaded first (seconds)."""
    _known(model_name)
    await run_in_threadpool(predictor.server.registry.manifest, version)  # 404 before the body
    parsed, images = await _read(request, settings)
    return await _answer(parsed, images, await cache.get(version), predictor, metrics,
                         answer_log)


async def _read(request: Request, settings: Settings) -> tuple[InferRequest, list[bytes]]:
    if request.headers.get("content-encoding", "identity") != "identity":
        raise UnsupportedImageFormat("compressed request bodies are not supported")
    body = await request.body()
    # Parsing 32 MB takes tens of milliseconds even when the body is bounded: off the loop.
    return await run_in_threadpool(_parsed, body, request.headers.get(HEADER_LENGTH), settings)


def _parsed(body: bytes, header_length: str | None,
            settings: Settings) -> tuple[InferRequest, list[bytes]]:
    parsed, tail = split_body(body, header_length, settings.max_images_per_request)
    if [tensor.name for tensor in parsed.inputs] != [INPUT]:
        raise InvalidInferRequest(f"this model takes one input, {INPUT} (BYTES [n]), not "
                                  f"{[tensor.name for tensor in parsed.inputs]}")
    images = byte_elements(parsed.inputs[0], tail, settings.max_images_per_request)
    if sum(map(len, images)) > settings.max_image_bytes:
        raise PayloadTooLarge(f"images are limited to {settings.max_image_bytes} bytes "
                              "per request, all of them together")
    return parsed, images


async def _answer(parsed: InferRequest, images: list[bytes], model: ServedVersion,
                  predictor: Predictor, metrics: ServiceMetrics,
                  answer_log: AnswerLog) -> Response:
    outputs = selected(parsed, model)
    answers = await predictor.answer(images, model)
    failed = [(i, a) for i, a in enumerate(answers) if isinstance(a, CxrError)]
    if failed:  # the protocol has no per-image errors: the request fails, naming each image
        first = failed[0][1]
        return refusal(status_of(first), first.code, "; ".join(
            f"image {i} of {INPUT}: {a.code}: {a.message}" for i, a in failed))
    predictions = [a for a in answers if isinstance(a, Prediction)]
    for prediction in predictions:
        metrics.predicted(prediction.label)
    # Only the served version's answers are the shadow's to compare with (not a pinned one's).
    answer_log.answered(predictions, images, "v2", shadowed=model is predictor.server.current)
    answered = tensors(model, predictions)
    parameters: dict[str, Any] = {"precision": model.precision, "runtime": model.runtime}
    ids = [p.prediction_id for p in predictions if p.prediction_id is not None]
    if ids:
        parameters["prediction_id"] = ",".join(ids)
    header: dict[str, Any] = {"model_name": MODEL, "model_version": model.version,
                              "parameters": parameters}
    if parsed.id is not None:
        header["id"] = parsed.id
    body, json_length = encode_response(
        header, [(answered[name], binary) for name, binary in outputs])
    headers = {"X-Model-Version": model.version}
    if json_length is None:
        return Response(body, media_type="application/json", headers=headers)
    return Response(body, media_type="application/octet-stream",
                    headers={**headers, HEADER_LENGTH: str(json_length)})
