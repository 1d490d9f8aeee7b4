"""Infer bodies within the size limit built to cost their parse: millions of empty lists,
strings or binary elements, nesting, and an ``Inference-Header-Content-Length`` that int()
refuses. Each is refused with a 400 in the protocol's shape before a Python object is built
for each element, and the parse runs off the event loop."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.oip import codec, routes
from api.oip.codec import HEADER_LENGTH, InputTensor, InvalidInferRequest, byte_elements, split_body
from shared.config import Settings
from tests.helpers.env import API_KEYS

MAX_IMAGES = 4
INFER = "/v2/models/cxr/infer"
TOO_MANY = "more elements than an infer request for this model can carry"


def _json_body(data: bytes, shape: str = "[1]") -> bytes:
    """An infer request whose ``data`` is ``data``, written as is."""
    return (b'{"inputs":[{"name":"IMAGE","shape":' + shape.encode()
            + b',"datatype":"BYTES","data":' + data + b"}]}")


def _listed(element: bytes, count: int) -> bytes:
    return b"[" + element + (b"," + element) * (count - 1) + b"]"


def _binary_body(tail: bytes) -> tuple[bytes, str]:
    """A binary infer request of one image (shape [1]) followed by ``tail``, and its JSON's
    length."""
    head = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(tail)}}]}).encode()
    return head + tail, str(len(head))


# A few MB each (the replay sent 32 MB): seconds and hundreds of MB to parse before.
HOSTILE_JSON = {
    "nested lists": _json_body(_listed(b"[[[[[[[[]]]]]]]]", 200_000)),
    "empty lists": _json_body(_listed(b"[]", 1_000_000)),
    "empty strings": _json_body(_listed(b'""', 1_000_000)),
    "numbers": _json_body(_listed(b"0", 1_000_000)),
    "keys": b'{"parameters":{' + b",".join(b'"%d":0' % i for i in range(200_000)) + b"}}",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app with no model: a body it can read answers 503, one it refuses 400."""
    root = tmp_path_factory.mktemp("hostile")
    settings = Settings(data_dir=root / "data", models_dir=root / "models",
                        state_dir=root / "state", broker_url=None, api_keys=API_KEYS,
                        export_onnx=False, max_images_per_request=MAX_IMAGES)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _refused(response: httpx.Response, fragment: str) -> None:
    """A 400 in the protocol's shape, ``{"error": "<code>: <message>", "code": <code>}``."""
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "code"}
    assert response.json()["code"] == "invalid_request"
    assert response.json()["error"].startswith("invalid_request: ")
    assert fragment in response.json()["error"], response.json()


@pytest.mark.parametrize("name", list(HOSTILE_JSON))
def test_json_of_many_elements_is_refused_before_it_is_parsed(client: TestClient,
                                                               name: str) -> None:
    # The element counts or shape checks after a parse would say otherwise.
    _refused(client.post(INFER, content=HOSTILE_JSON[name]), TOO_MANY)


def test_deep_nesting_is_refused(client: TestClient) -> None:
    _refused(client.post(INFER, content=_json_body(b"[" * 100_000 + b"]" * 100_000)),
             "nests more than")


def test_binary_data_of_many_empty_elements_is_refused(client: TestClient) -> None:
    body, length = _binary_body(b"\0" * 4 * 1_000_000)
    _refused(client.post(INFER, content=body, headers={HEADER_LENGTH: length}),
             "has shape [1] but more than 1 elements")


def test_a_header_length_int_refuses_is_a_400(client: TestClient) -> None:
    body, length = _binary_body(b"")
    refused = client.post(INFER, content=body, headers={HEADER_LENGTH: "9" * 4301})
    _refused(refused, HEADER_LENGTH)
    assert len(refused.json()["error"]) < 200  # the header is not echoed whole
    _refused(client.post(INFER, content=body, headers={HEADER_LENGTH: "1" + "0" * 19}),
             HEADER_LENGTH)


def test_leading_zeros_of_a_header_length_are_read(client: TestClient) -> None:
    image = b"not an image"
    body, length = _binary_body(len(image).to_bytes(4, "little") + image)
    plain = client.post(INFER, content=body, headers={HEADER_LENGTH: length})
    padded = client.post(INFER, content=body, headers={HEADER_LENGTH: "0" * 5000 + length})
    assert padded.json()["code"] not in ("invalid_request", "internal_error"), padded.text
    assert (padded.status_code, padded.json()) == (plain.status_code, plain.json())


def test_the_body_is_parsed_off_the_event_loop(client: TestClient,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    on_loop: list[bool] = []

    def spied(*args: Any) -> tuple[codec.InferRequest, memoryview]:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return split_body(*args)

    monkeypatch.setattr(routes, "split_body", spied)
    _refused(client.post(INFER, content=HOSTILE_JSON["empty lists"]), TOO_MANY)
    assert on_loop == [False]


def test_an_unexpected_error_answers_in_the_protocols_shape(
        client: TestClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def failing(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(routes, "split_body", failing)
    with caplog.at_level(logging.ERROR):
        answer = client.post(INFER, content=b"{}")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal_error: an unexpected error occurred; it was "
                                      "logged", "code": "internal_error"}
    # one traceback, logged here: none from the app's handler or the server
    assert [r.name for r in caplog.records if r.exc_info] == ["api.oip.refusals"]


def test_binary_elements_stop_one_past_the_shape() -> None:
    # 10**6 zero lengths: the list of them is never built, only the first four.
    assert codec._unpacked(b"\0" * 4 * 1_000_000, "IMAGE", 3) == [b""] * 4
    tensor = InputTensor(name="IMAGE", shape=[3], datatype="BYTES",
                         parameters={"binary_data_size": 4 * 1_000_000})
    with pytest.raises(InvalidInferRequest, match="more than 3 elements"):
        byte_elements(tensor, b"\0" * 4 * 1_000_000, MAX_IMAGES)


def test_json_elements_stop_one_past_the_shape() -> None:
    # Element 3 is no base64: it is never decoded, the count refuses first.
    image = base64.b64encode(b"image").decode()
    tensor = InputTensor(name="IMAGE", shape=[2], datatype="BYTES",
                         data=[[image], [image], [image], ["%%%"]])
    with pytest.raises(InvalidInferRequest, match="more than 2 elements"):
        byte_elements(tensor, b"", MAX_IMAGES)


def test_the_largest_legitimate_request_passes_the_structure_check() -> None:
    # shape [n, 1] (the most tokens an element takes), every output and parameters, and an
    # id whose brackets, commas and escaped quotes are in a string, so are not structure
    images = [[base64.b64encode(b"image %d" % i).decode()] for i in range(MAX_IMAGES)]
    outputs = [{"name": name, "parameters": {"binary_data": False}}
               for name in ("PROBABILITIES", "LABEL", "RELIABLE", "REASONS", "SHIFT_SCORE")]
    request = {"id": '[{,"\\' * 10_000, "parameters": {"binary_data_output": False},
               "inputs": [{"name": "IMAGE", "shape": [MAX_IMAGES, 1], "datatype": "BYTES",
                           "parameters": {}, "data": images}],
               "outputs": outputs}
    parsed, tail = split_body(json.dumps(request).encode(), None, MAX_IMAGES)
    assert parsed.id == request["id"] and len(tail) == 0
    assert byte_elements(parsed.inputs[0], tail, MAX_IMAGES) == [
        b"image %d" % i for i in range(MAX_IMAGES)]


@pytest.mark.parametrize("header", ["", "-1", "1e3", " 12", "\uff11\uff12"])
def test_a_header_length_that_is_no_decimal_is_refused(header: str) -> None:
    with pytest.raises(InvalidInferRequest, match=HEADER_LENGTH):
        split_body(b"{}", header, MAX_IMAGES)


def test_unterminated_strings_and_stray_escapes_are_the_parsers_to_refuse() -> None:
    for head in (b'{"id":"' + b'\\"' * 100_000, b'{"id":"\\', b'\\"' * 1000, b'"'):
        with pytest.raises(InvalidInferRequest, match="not an inference request"):
            split_body(head, None, MAX_IMAGES)
