"""The Open Inference Protocol's (KServe v2, Triton's HTTP API) infer bodies on the wire.

A request is JSON, or JSON followed by raw tensor data (Triton's binary tensor data
extension, what tritonclient sends by default): the ``Inference-Header-Content-Length``
header gives the JSON's length in bytes, and each input with ``parameters.binary_data_size``
takes that many bytes of the rest, in order. A BYTES tensor in binary is each element as a
4-byte little-endian length and its bytes; in JSON each element is a string, which for an
encoded image can only be base64 (PNG and DICOM bytes are not UTF-8). An answer puts each
output in its JSON ``data``, or after the JSON when the request asked for binary data.
A refusal is ``{"error": message}``, what clients raise, with the service's stable code beside.
Nothing here imports the app: the routes (api/oip/routes.py) read and answer with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from shared.errors import CxrError, TooManyImages

HEADER_LENGTH = "Inference-Header-Content-Length"
Datatype = Literal["BYTES", "FP32", "BOOL"]
# Little-endian, as the binary tensor data extension specifies.
_NUMPY = {"FP32": "<f4", "BOOL": "?"}
_LENGTH = struct.Struct("<I")


class InvalidInferRequest(CxrError):
    """A body the protocol does not allow, or one this model cannot take (400)."""

    code = "invalid_request"


class ProtocolError(BaseModel):
    error: str = Field(description="`<code>: <message>`, what tritonclient raises.")
    code: str = Field(description="The stable code the rest of the API uses.")


class InputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    """The JSON of an infer request (or its header, with binary tensor data after it)."""

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: Datatype
    shape: list[int]
    data: list[Any]  # flat, row-major; str for BYTES

    def raw(self) -> bytes:
        if self.datatype == "BYTES":
            return b"".join(_LENGTH.pack(len(e)) + e for e in (s.encode() for s in self.data))
        return np.asarray(self.data, dtype=_NUMPY[self.datatype]).tobytes()


def split_body(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """The request's JSON, parsed, and the binary tensor data after it."""
    if header_length is None:
        head, tail = body, b""
    else:
        digits = header_length.isascii() and header_length.isdigit()
        if not digits or int(header_length) > len(body):
            raise InvalidInferRequest(f"{HEADER_LENGTH} is {header_length!r}; the body has "
                                      f"{len(body)} bytes")
        head, tail = body[:int(header_length)], body[int(header_length):]
    try:
        return InferRequest.model_validate_json(head), tail
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors()[:3])
        raise InvalidInferRequest(f"not an inference request: {problems}") from None


def byte_elements(tensor: InputTensor, tail: bytes, max_elements: int) -> list[bytes]:
    """The elements of a BYTES input of shape [n] or [n, 1], from the binary data (its
    ``binary_data_size`` bytes, all of ``tail``: the request's only input) or its JSON
    ``data`` (base64 strings)."""
    shape = tensor.shape
    if tensor.datatype != "BYTES" or not (len(shape) == 1 or shape[1:] == [1]) or shape[0] < 1:
        raise InvalidInferRequest(f"input {tensor.name} must be BYTES of shape [n] or [n, 1] "
                                  f"with n >= 1, not {tensor.datatype} {tensor.shape}")
    count = tensor.shape[0]
    if count > max_elements:
        raise TooManyImages(f"{count} images in one request; the limit is {max_elements} "
                            "(CXR_MAX_IMAGES_PER_REQUEST)")
    if any(key.startswith("shared_memory") for key in tensor.parameters):
        raise InvalidInferRequest("shared memory is not supported: send the data in the body")
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if size != len(tail) or tensor.data is not None:
            raise InvalidInferRequest(f"input {tensor.name} declares {size} bytes of binary "
                                      f"data; {len(tail)} follow the JSON")
        elements = _unpacked(tail, tensor.name)
    elif tail:
        raise InvalidInferRequest(f"{len(tail)} bytes follow the JSON, but no input declares "
                                  "binary_data_size")
    elif tensor.data is None:
        raise InvalidInferRequest(f"input {tensor.name} has neither data nor binary_data_size")
    else:
        elements = [_base64(value, tensor.name, i) for i, value in enumerate(_flat(tensor.data))]
    if len(elements) != count:
        raise InvalidInferRequest(f"input {tensor.name} has shape {tensor.shape} but "
                                  f"{len(elements)} elements")
    return elements


def _unpacked(raw: bytes, name: str) -> list[bytes]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidInferRequest(f"the binary data of {name} ends inside a length")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + size > len(raw):
            raise InvalidInferRequest(f"element {len(elements)} of {name} declares {size} "
                                      f"bytes; {len(raw) - offset} are left")
        elements.append(raw[offset:offset + size])
        offset += size
    return elements


def _flat(data: list[Any]) -> Iterator[Any]:
    for value in data:  # the protocol allows nested row-major lists as well as flat ones
        if isinstance(value, list):
            yield from _flat(value)
        else:
            yield value


def _base64(value: Any, name: str, index: int) -> bytes:
    try:
        if not isinstance(value, str):
            raise ValueError("not a string")
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidInferRequest(
            f"element {index} of {name} is not a base64 string; in JSON an image must be "
            "base64-encoded (or send it as binary tensor data)") from None


def wants_binary(request: InferRequest, output: RequestedOutput | None) -> bool:
    """Whether an output goes after the JSON: its own ``binary_data``, else the request's
    ``binary_data_output`` (tritonclient sets it when it names no outputs)."""
    default = request.parameters.get("binary_data_output", False)
    chosen = output.parameters.get("binary_data", default) if output else default
    if not isinstance(chosen, bool):
        raise InvalidInferRequest(f"binary_data must be true or false, not {chosen!r}")
    return chosen


def encode_response(header: dict[str, Any], outputs: list[tuple[OutputTensor, bool]]
                    ) -> tuple[bytes, int | None]:
    """The answer's body and, when some output is binary, the length of its JSON."""
    entries, tail = [], []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": tensor.shape}
        if binary:
            raw = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = tensor.data
        entries.append(entry)
    head = json.dumps({**header, "outputs": entries}, allow_nan=False,
                      separators=(",", ":")).encode()
    return (head, None) if not tail else (head + b"".join(tail), len(head))
