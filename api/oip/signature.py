"""The model as the Open Inference Protocol sees it (api/oip/routes.py): the outputs an
answer gives, and the JSON of the answers other than infer's."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from api.oip.codec import (
    Datatype,
    InferRequest,
    InvalidInferRequest,
    OutputTensor,
    wants_binary,
)
from shared.ml.served import ServedVersion
from shared.schemas import Prediction

# Each image's outputs, in the order an answer lists them; SHIFT_SCORE only for versions
# published with a shift reference.
OUTPUTS: dict[str, Datatype] = {"PROBABILITIES": "FP32", "LABEL": "BYTES", "RELIABLE": "BOOL",
                                "REASONS": "BYTES", "SHIFT_SCORE": "FP32"}


def outputs_of(has_shift: bool) -> list[str]:
    return [name for name in OUTPUTS if has_shift or name != "SHIFT_SCORE"]


def selected(request: InferRequest, model: ServedVersion) -> list[tuple[str, bool]]:
    """The outputs the request asks for (all, when it names none), each with whether it
    goes in binary; checked before any image is decoded."""
    names = outputs_of(model.shift is not None)
    if not request.outputs:
        return [(name, wants_binary(request, None)) for name in names]
    for output in request.outputs:
        if output.name not in names:
            raise InvalidInferRequest(f"no output {output.name!r}; this version's are "
                                      f"{', '.join(names)}")
        if "classification" in output.parameters:
            raise InvalidInferRequest("classification outputs are not supported: "
                                      "PROBABILITIES and LABEL carry them")
    return [(output.name, wants_binary(request, output)) for output in request.outputs]


def tensors(model: ServedVersion, answers: list[Prediction]) -> dict[str, OutputTensor]:
    """Every output of the answers, probabilities in the order of the version's classes."""
    n = len(answers)
    # every answer of a version with a shift reference has a score (ServedVersion.answer)
    shift = [a.distribution_shift.score if a.distribution_shift else math.nan for a in answers]
    values: dict[str, tuple[list[int], list[Any]]] = {
        "PROBABILITIES": ([n, len(model.classes)],
                          [a.probabilities[c] for a in answers for c in model.classes]),
        "LABEL": ([n], [a.label for a in answers]),
        "RELIABLE": ([n], [a.reliable for a in answers]),
        "REASONS": ([n], [",".join(a.reasons) for a in answers]),
        "SHIFT_SCORE": ([n], shift)}
    return {name: OutputTensor(name, OUTPUTS[name], *values[name])
            for name in outputs_of(model.shift is not None)}


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 where the size varies (the number of images).")


class ModelParameters(BaseModel):
    version: str = Field(description="The version this metadata describes.")
    classes: list[str] = Field(description="The labels, in the order of PROBABILITIES.")
    image_size: int
    served: bool = Field(description="Whether `infer` without a version answers with it.")
    loaded: bool = Field(description="Whether it is in memory; another published version is "
                         "loaded by its first `infer` (seconds).")
    runtime: str | None = Field(None, description="Once loaded: tensorflow or onnx.")
    precision: str | None = Field(None, description="Once loaded: float32 or int8.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="Every published version, newest first.")
    platform: str = Field(description="`<runtime>_<precision>` once loaded, else `keras`.")
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: ModelParameters


def _inlined(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` put in place: an operation's request body
    in OpenAPI cannot point into a schema of its own."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        return [resolve(value) for value in node] if isinstance(node, list) else node

    return dict(resolve(schema))


# The infer routes read their bodies themselves (the binary form is not JSON); documented here.
REQUEST_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inlined(InferRequest)},
    "application/octet-stream": {"schema": {
        "type": "string", "format": "binary",
        "description": "The JSON, then the tensor data (binary tensor data extension); the "
                       "Inference-Header-Content-Length header gives the JSON's length."}}}}}
