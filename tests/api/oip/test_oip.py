"""The Open Inference Protocol routes through tritonclient, a client nobody here wrote, against
the real app served by uvicorn on a loopback port (tritonclient speaks only HTTP)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from api.main import create_app
from shared.config import Settings
from shared.loading import load_version
from shared.ml.modeling import ModelConfig, build_model
from shared.ml.shift import Detector, ShiftReference, block_slices
from shared.registry.files import SHIFT_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.env import API_KEYS, READER_KEY, sample_files
from tests.helpers.services import free_port
from tests.helpers.versions import publish_random, wait_ready

MAX_IMAGES = 4
MAX_IMAGE_BYTES = 1024 * 1024
OUTPUTS = ["PROBABILITIES", "LABEL", "RELIABLE", "REASONS"]
UNPUBLISHED = "20990101-000000-abcdef"


@dataclass(frozen=True)
class Served:
    url: str
    active: str
    other: str  # published, never activated
    images: list[bytes]  # real radiographs, one per class
    registry: LocalRegistry


def _shift_reference() -> bytes:
    """One detector on block3_pool's statistics: enough for a version to score shift."""
    model = build_model(ModelConfig(num_classes=3, image_size=32))
    start, stop = block_slices(model)["block3_pool"]
    detector = Detector("block3_pool", start, stop, np.zeros((3, stop - start)),
                        np.eye(stop - start))
    return ShiftReference(detectors=(detector,), energy=None, threshold=10.0,
                          quantile=0.99).to_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, radiography_root: Path) -> Iterator[Served]:
    """One uvicorn server for the module, serving the newer of two random-weight versions."""
    root = tmp_path_factory.mktemp("oip")
    settings = Settings(data_dir=root / "data", models_dir=root / "models",
                        state_dir=root / "state", broker_url=None, api_keys=API_KEYS,
                        export_onnx=False, batch_max_size=MAX_IMAGES,
                        max_images_per_request=MAX_IMAGES, max_image_bytes=MAX_IMAGE_BYTES)
    registry = LocalRegistry(settings.models_dir)
    other = publish_random(registry, seed=1, files={SHIFT_FILE: _shift_reference()})
    active = publish_random(registry, seed=2, activate=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    url = f"127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=f"http://{url}", timeout=60) as client:
            wait_ready(client)  # type: ignore[arg-type]
        images = [files[0].read_bytes()
                  for files in sample_files(radiography_root, 1).values()]
        yield Served(url, active, other, images, registry)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def client(served: Served) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=served.url, network_timeout=120) as triton_client:
        yield triton_client


def _input(images: list[bytes], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("IMAGE", [len(images)], "BYTES")
    # In JSON a BYTES element is a string: an encoded image travels as base64.
    data = images if binary else [base64.b64encode(image) for image in images]
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    return tensor


def _predict(served: Served, images: list[bytes]) -> list[dict[str, Any]]:
    files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
    response = httpx.post(f"http://{served.url}/predict", files=files, timeout=60)
    assert response.status_code == 200, response.text
    return [entry["prediction"] for entry in response.json()["images"]]


def _texts(tensor: np.ndarray) -> list[str]:
    """A BYTES output's elements: bytes from binary data, str from JSON (as tritonclient
    gives them)."""
    return [e.decode() if isinstance(e, bytes) else e for e in tensor.tolist()]


def _refused(call: Any, status: str, code: str) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    assert raised.value.status() == status, raised.value
    assert str(raised.value.message()).startswith(f"{code}: ") or f": {code}: " in str(
        raised.value.message())
    return str(raised.value.message())


def test_server_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata() == {"name": "cxr-service",
                                            "version": package_version("cxr-service"),
                                            "extensions": ["binary_tensor_data"]}


def test_model_metadata_and_readiness(client: triton.InferenceServerClient,
                                      served: Served) -> None:
    metadata = client.get_model_metadata("cxr")
    assert metadata["name"] == "cxr" and set(metadata["versions"]) == {served.active,
                                                                        served.other}
    assert metadata["platform"] == "tensorflow_float32"
    assert metadata["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["shape"]) for o in metadata["outputs"]] == [
        ("PROBABILITIES", [-1, 3]), ("LABEL", [-1]), ("RELIABLE", [-1]), ("REASONS", [-1])]
    assert metadata["parameters"] == {"version": served.active, "classes": ["a", "b", "c"],
                                      "image_size": 32, "served": True, "loaded": True,
                                      "runtime": "tensorflow", "precision": "float32"}
    other = client.get_model_metadata("cxr", model_version=served.other)
    assert other["parameters"]["version"] == served.other and not other["parameters"]["served"]
    assert client.is_model_ready("cxr") and client.is_model_ready("cxr", served.other)
    assert not client.is_model_ready("resnet") and not client.is_model_ready("cxr", UNPUBLISHED)
    _refused(lambda: client.get_model_metadata("resnet"), "404", "model_not_found")
    _refused(lambda: client.get_model_metadata("cxr", UNPUBLISHED), "404", "model_not_found")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_answers_as_predict_does(client: triton.InferenceServerClient, served: Served,
                                       binary: bool) -> None:
    # Binary: tritonclient's defaults (binary input, no outputs named: binary outputs).
    # JSON: base64 strings in "data", each output asked for in "data".
    outputs = None if binary else [triton.InferRequestedOutput(name, binary_data=False)
                                   for name in OUTPUTS]
    result = client.infer("cxr", [_input(served.images, binary)], outputs=outputs,
                          request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "cxr"
    assert response["model_version"] == served.active
    parameters = response["parameters"]
    assert len(set(parameters.pop("prediction_id").split(","))) == len(served.images)
    assert parameters == {"precision": "float32", "runtime": "tensorflow"}
    assert all(("data" in o) != binary for o in response["outputs"])
    expected = _predict(served, served.images)
    probabilities = result.as_numpy("PROBABILITIES")
    assert probabilities.shape == (3, 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(
        probabilities, [[p["probabilities"][c] for c in "abc"] for p in expected], atol=1e-5)
    assert _texts(result.as_numpy("LABEL")) == [p["label"] for p in expected]
    assert result.as_numpy("RELIABLE").tolist() == [p["reliable"] for p in expected]
    assert _texts(result.as_numpy("REASONS")) == [",".join(p["reasons"]) for p in expected]


def test_infer_with_a_named_version(client: triton.InferenceServerClient,
                                    served: Served) -> None:
    unloaded = client.get_model_metadata("cxr", served.other)  # only this test loads it
    assert unloaded["platform"] == "keras" and not unloaded["parameters"]["loaded"]
    active = client.infer("cxr", [_input(served.images)], model_version=served.active,
                          outputs=[triton.InferRequestedOutput("PROBABILITIES")])
    other = client.infer("cxr", [_input(served.images)], model_version=served.other)
    assert other.get_response()["model_version"] == served.other
    # it was published with a shift reference: its answers carry a score
    assert [o["name"] for o in other.get_response()["outputs"]] == [*OUTPUTS, "SHIFT_SCORE"]
    expected = _predict(served, served.images)
    np.testing.assert_allclose(active.as_numpy("PROBABILITIES"),
                               [[p["probabilities"][c] for c in "abc"] for p in expected],
                               atol=1e-5)
    assert np.abs(other.as_numpy("PROBABILITIES") - active.as_numpy("PROBABILITIES")).max() > 1e-3
    # The served version is untouched; the other one now answers from memory.
    assert client.get_model_metadata("cxr")["parameters"]["version"] == served.active
    loaded = client.get_model_metadata("cxr", served.other)
    assert loaded["platform"] == "tensorflow_float32" and loaded["parameters"]["loaded"]
    assert loaded["outputs"][-1] == {"name": "SHIFT_SCORE", "datatype": "FP32", "shape": [-1]}
    # What the other version answered by name is what that version itself answers.
    own = load_version(served.registry, served.other)
    answers = [own.predict(own.decode(image, 10**8).gray) for image in served.images]
    np.testing.assert_allclose(other.as_numpy("PROBABILITIES"),
                               [[a.probabilities[c] for c in "abc"] for a in answers],
                               atol=1e-5)
    np.testing.assert_allclose(other.as_numpy("SHIFT_SCORE"),
                               [a.distribution_shift.score  # type: ignore[union-attr]
                                for a in answers], rtol=1e-4)


def test_a_bad_image_fails_the_request_and_is_named(client: triton.InferenceServerClient,
                                                    served: Served) -> None:
    images = [served.images[0], b"not an image at all", served.images[1]]
    message = _refused(lambda: client.infer("cxr", [_input(images)]), "400", "invalid_image")
    assert message.startswith("image 1 of IMAGE: invalid_image: ") and "image 0" not in message


def test_unknown_model_version_and_output(client: triton.InferenceServerClient,
                                          served: Served) -> None:
    one = [served.images[0]]
    _refused(lambda: client.infer("resnet", [_input(one)]), "404", "model_not_found")
    _refused(lambda: client.infer("cxr", [_input(one)], model_version=UNPUBLISHED), "404",
             "model_not_found")
    message = _refused(lambda: client.infer(
        "cxr", [_input(one)], outputs=[triton.InferRequestedOutput("BOXES")]), "400",
        "invalid_request")
    assert "BOXES" in message and "PROBABILITIES" in message


def test_too_many_images_and_too_large_a_body(client: triton.InferenceServerClient,
                                              served: Served) -> None:
    many = [served.images[0]] * (MAX_IMAGES + 1)
    assert "limit is 4" in _refused(lambda: client.infer("cxr", [_input(many)]), "413",
                                    "too_many_images")
    url = f"http://{served.url}/v2/models/cxr/infer"
    declared = httpx.post(url, content=b"x" * (MAX_IMAGE_BYTES + 65 * 1024))
    streamed = httpx.post(url, content=iter([b"x" * (MAX_IMAGE_BYTES // 2)] * 3))
    for response in (declared, streamed):  # refused on its length, or as it streams in
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
        assert response.json()["error"].startswith("payload_too_large: ")


def test_plain_json_requests_and_their_refusals(served: Served) -> None:
    url = f"http://{served.url}/v2/models/cxr/infer"
    data = [[base64.b64encode(image).decode()] for image in served.images[:2]]  # shape [2, 1]
    image: dict[str, Any] = {"name": "IMAGE", "shape": [2, 1], "datatype": "BYTES", "data": data}
    body = {"inputs": [image], "outputs": [{"name": "LABEL"}]}
    answer = httpx.post(url, json=body, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert [o["name"] for o in answer.json()["outputs"]] == ["LABEL"]
    assert answer.json()["outputs"][0]["data"] == [
        p["label"] for p in _predict(served, served.images[:2])]
    for bad, fragment in [
            ({**body, "inputs": [{**image, "data": ["%%%", "%%%"]}]}, "base64"),
            ({**body, "inputs": [{**image, "shape": [3]}]}, "shape [3]"),
            ({**body, "inputs": [{**image, "name": "PIXELS"}]}, "one input")]:
        refused = httpx.post(url, json=bad)
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
        assert fragment in refused.json()["error"], refused.json()
    garbled = httpx.post(url, content=b"{}", headers={"Inference-Header-Content-Length": "9"})
    assert garbled.status_code == 400 and "Inference-Header-Content-Length" in garbled.text


def test_without_a_model_and_without_a_key(tmp_path: Path, radiography_root: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models",
                        state_dir=tmp_path / "state", broker_url=None, api_keys=API_KEYS,
                        require_key_for_reads=True)
    image = base64.b64encode(sample_files(radiography_root, 1)["Normal"][0].read_bytes())
    body = {"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES",
                        "data": [image.decode()]}]}
    with TestClient(create_app(settings)) as client:
        # probes carry no key: health answers without one, as /healthz does
        assert client.get("/v2/health/live").json() == {"live": True}
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        refused = client.get("/v2/models/cxr/ready")  # refusals before the route's code too
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert refused.json()["error"].startswith("unauthorized: ")
        client.headers["X-API-Key"] = READER_KEY
        model_ready = client.get("/v2/models/cxr/ready")
        assert model_ready.status_code == 503 and model_ready.json()["ready"] is False
        answer = client.post("/v2/models/cxr/infer", json=body)
        assert answer.status_code == 503 and answer.json()["code"] == "no_model"
        assert answer.headers["Retry-After"] == "5"
