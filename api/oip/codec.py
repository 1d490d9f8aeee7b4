"""The Open Inference Protocol's (KServe v2, Triton's HTTP API) infer bodies on the wire.

A request is JSON, or JSON followed by raw tensor data (Triton's binary tensor data
extension, what tritonclient sends by default): the ``Inference-Header-Content-Length``
header gives the JSON's length in bytes, and each input with ``parameters.binary_data_size``
takes that many bytes of the rest, in order. A BYTES tensor in binary is each element as a
4-byte little-endian length and its bytes; in JSON each element is a string, which for an
encoded image can only be base64 (PNG and DICOM bytes are not UTF-8). An answer puts each
output in its JSON ``data``, or after the JSON when the request asked for binary data.
A refusal is ``{"error": message}``, what clients raise, with the service's stable code beside.
A body is bounded before Python objects are built for it: JSON with more structure than a
request of the allowed number of images, and binary data with more elements than its shape.
Nothing here imports the app: the routes (api/oip/routes.py) read and answer with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from shared.errors import CxrError, TooManyImages

HEADER_LENGTH = "Inference-Header-Content-Length"
Datatype = Literal["BYTES", "FP32", "BOOL"]
# Little-endian, as the binary tensor data extension specifies.
_NUMPY = {"FP32": "<f4", "BOOL": "?"}
_LENGTH = struct.Struct("<I")
# A length that fits in 64 bits: Python's int() refuses strings of over 4300 digits.
_MAX_LENGTH_DIGITS = 19
# What a JSON parser builds an object for is a string or a value between the structural
# characters: an infer request's JSON has a few dozen beside its data, and at most four per
# element of it (``[``, the string, ``]``, ``,`` for shape [n, 1]); it nests five deep.
_STRUCTURE = re.compile(rb"[\[\]{},]")
_TOKENS_BESIDE_DATA = 1024
_TOKENS_PER_ELEMENT = 8
_MAX_DEPTH = 16


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


def split_body(body: bytes, header_length: str | None,
               max_elements: int) -> tuple[InferRequest, memoryview]:
    """The request's JSON, parsed, and the binary tensor data after it (a view: not a copy of
    tens of MB); JSON with more structure than a request of ``max_elements`` elements is
    refused before it is parsed."""
    if header_length is None:
        head, tail = body, memoryview(b"")
    else:
        length = _json_length(header_length, len(body))
        head, tail = body[:length], memoryview(body)[length:]
    _check_structure(head, _TOKENS_BESIDE_DATA + _TOKENS_PER_ELEMENT * max_elements)
    try:
        return InferRequest.model_validate_json(head), tail
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors()[:3])
        raise InvalidInferRequest(f"not an inference request: {problems}") from None


def _json_length(header_length: str, body_size: int) -> int:
    significant = header_length.lstrip("0") or "0"
    if (not (header_length.isascii() and header_length.isdigit())
            or len(significant) > _MAX_LENGTH_DIGITS or int(significant) > body_size):
        shown = (repr(header_length) if len(header_length) <= 40
                 else f"{header_length[:20]!r}... ({len(header_length)} characters)")
        raise InvalidInferRequest(f"{HEADER_LENGTH} is {shown}; the body has {body_size} bytes")
    return int(significant)


def _check_structure(head: bytes, limit: int) -> None:
    """Count the JSON's strings and the structural characters outside them, and its depth,
    refusing it once over ``limit`` or _MAX_DEPTH: a parser would build a Python object for
    each (millions of ``[]`` or ``""`` in a body within the size limit take gigabytes and
    seconds). The search is in C, the counting one step a token, and it stops early."""
    if b"\\" in head:  # without escaped backslashes and quotes, each quote opens or closes
        head = head.replace(b"\\\\", b"").replace(b'\\"', b"")
    tokens = depth = position = 0
    while position < len(head):
        quote = head.find(b'"', position)
        for match in _STRUCTURE.finditer(head, position, len(head) if quote < 0 else quote):
            tokens += 1
            depth += 1 if match[0] in b"[{" else -1 if match[0] in b"]}" else 0
            if depth > _MAX_DEPTH:
                raise InvalidInferRequest(f"the JSON nests more than {_MAX_DEPTH} levels "
                                          "deep; an infer request nests five")
            if tokens > limit:
                raise _too_many(limit)
        if quote < 0:
            return
        tokens += 1
        if tokens > limit:
            raise _too_many(limit)
        close = head.find(b'"', quote + 1)
        position = len(head) if close < 0 else close + 1  # unterminated: the parser says so


def _too_many(limit: int) -> InvalidInferRequest:
    return InvalidInferRequest(f"the JSON has more than {limit} strings, brackets, braces and "
                               "commas: more elements than an infer request for this model "
                               "can carry")


def byte_elements(tensor: InputTensor, tail: bytes | memoryview,
                  max_elements: int) -> list[bytes]:
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
        elements = _unpacked(tail, tensor.name, count)
    elif tail:
        raise InvalidInferRequest(f"{len(tail)} bytes follow the JSON, but no input declares "
                                  "binary_data_size")
    elif tensor.data is None:
        raise InvalidInferRequest(f"input {tensor.name} has neither data nor binary_data_size")
    else:
        values = islice(_flat(tensor.data), count + 1)  # one more says there are too many
        elements = [_base64(value, tensor.name, i) for i, value in enumerate(values)]
    if len(elements) != count:
        found = f"more than {count}" if len(elements) > count else str(len(elements))
        raise InvalidInferRequest(f"input {tensor.name} has shape {tensor.shape} but {found} "
                                  "elements")
    return elements


def _unpacked(raw: bytes | memoryview, name: str, count: int) -> list[bytes]:
    """At most ``count`` + 1 elements: one more says there are too many (a body of 4-byte
    zero lengths would otherwise be millions of them)."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) <= count:
        if offset + _LENGTH.size > len(raw):
            raise InvalidInferRequest(f"the binary data of {name} ends inside a length")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + size > len(raw):
            raise InvalidInferRequest(f"element {len(elements)} of {name} declares {size} "
                                      f"bytes; {len(raw) - offset} are left")
        elements.append(bytes(raw[offset:offset + size]))
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
