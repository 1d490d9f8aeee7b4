"""The HTTP surface in-process (real app, real SQLite store and embedded broker, no worker)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from shared.registry.local import LocalRegistry
from tests.helpers.env import AS_ADMIN, sample_files
from tests.helpers.versions import publish_random, wait_ready, zip_bytes


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=AS_ADMIN) as test_client:
        yield test_client


def _error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert body["error"]["message"]


def test_health_and_readiness_without_a_model(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and ready.json()["broker"] == "ok"


def test_predict_without_a_model_says_how_to_train(client: TestClient,
                                                   radiography_root: Path) -> None:
    image = sample_files(radiography_root, 1)["COVID"][0].read_bytes()
    response = client.post("/predict", files={"file": ("x.png", image, "image/png")})
    _error(response, 503, "no_model")
    assert "/retrain" in response.json()["error"]["message"]


def test_without_a_model_bad_input_fails_first_however_many_images(
        client: TestClient, radiography_root: Path) -> None:
    image = sample_files(radiography_root, 1)["COVID"][0].read_bytes()
    good = [("file", ("x.png", image, "image/png"))] * 2
    _error(client.post("/predict", files=good), 503, "no_model")
    bad = [good[0], ("file", ("y.png", b"not an image", "image/png"))]
    _error(client.post("/predict", files=bad), 400, "invalid_image")


@pytest.mark.parametrize(("payload", "status", "code"), [
    (b"", 400, "invalid_image"),
    (b"just some text, not an image", 400, "invalid_image"),
    (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
     b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;", 415, "unsupported_media_type"),
])
def test_bad_images_get_a_coded_4xx(client: TestClient, payload: bytes, status: int,
                                    code: str) -> None:
    _error(client.post("/predict", files={"file": ("x.png", payload, "image/png")}), status, code)


def test_truncated_png_is_refused(client: TestClient, radiography_root: Path) -> None:
    image = sample_files(radiography_root, 1)["Normal"][0].read_bytes()
    response = client.post("/predict", files={"file": ("x.png", image[: len(image) // 2])})
    _error(response, 400, "invalid_image")


def test_predict_without_a_file_is_a_validation_error(client: TestClient) -> None:
    _error(client.post("/predict"), 422, "validation_error")


def test_dataset_upload_list_and_hostile_zips(client: TestClient, radiography_root: Path,
                                              settings: Settings) -> None:
    entries = {f"{label}/images/{p.name}": p.read_bytes()
               for label, files in sample_files(radiography_root, 3).items() for p in files}
    created = client.post("/datasets", data={"name": "mini"},
                          files={"file": ("mini.zip", zip_bytes(entries), "application/zip")})
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "mini", "images": 9, "layout": "covid19-radiography",
                              "classes": {"COVID": 3, "Normal": 3, "Viral Pneumonia": 3}}
    assert [d["name"] for d in client.get("/datasets").json()["datasets"]] == ["mini"]
    assert client.get("/datasets/mini").json()["images"] == 9
    _error(client.get("/datasets/nope"), 404, "dataset_not_found")

    again = client.post("/datasets", data={"name": "mini"}, files={"file": zip_bytes(entries)})
    _error(again, 409, "dataset_exists")
    escaping = zip_bytes({**entries, "../evil.png": next(iter(entries.values()))})
    _error(client.post("/datasets", data={"name": "evil"}, files={"file": escaping}),
           422, "invalid_dataset")
    _error(client.post("/datasets", data={"name": "txt"}, files={"file": b"not a zip"}),
           422, "invalid_dataset")
    _error(client.post("/datasets", data={"name": "../x"}, files={"file": zip_bytes(entries)}),
           422, "validation_error")
    _error(client.post("/datasets", data={"name": "empty"}, files={"file": b""}),
           422, "invalid_dataset")
    assert sorted(p.name for p in settings.data_dir.iterdir()) == ["mini"]


def test_retrain_validation(client: TestClient, radiography_root: Path) -> None:
    _error(client.post("/retrain", json={"dataset": "missing"}), 404, "dataset_not_found")
    _error(client.post("/retrain", json={"dataset": "x", "epochs": 0}), 422, "validation_error")
    _error(client.post("/retrain", json={"dataset": "x", "image_size": 8}), 422,
           "validation_error")
    _error(client.post("/retrain", json={"dataset": "x", "base_weights": "random"}), 422,
           "validation_error")
    _error(client.post("/retrain", json={"dataset": "x", "surprise": 1}), 422,
           "validation_error")
    _error(client.post("/retrain", content=b"{not json", headers={"content-type":
                                                                   "application/json"}),
           422, "validation_error")


def test_retrain_queues_a_job_that_can_be_cancelled_before_it_runs(
    client: TestClient, radiography_root: Path
) -> None:
    entries = {f"{label}/{p.name}": p.read_bytes()
               for label, files in sample_files(radiography_root, 4).items() for p in files}
    created = client.post("/datasets", data={"name": "q"}, files={"file": zip_bytes(entries)})
    assert created.status_code == 201
    accepted = client.post("/retrain", json={"dataset": "q", "base_weights": "none"})
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    assert accepted.json()["status_url"].endswith(f"/jobs/{job_id}")
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "queued" and job["progress"]["epochs"] == 20
    assert client.get("/jobs").json()["jobs"][0]["job_id"] == job_id
    assert client.delete(f"/jobs/{job_id}").json()["state"] == "cancelled"
    _error(client.delete(f"/jobs/{job_id}"), 409, "job_not_cancellable")
    _error(client.get("/jobs/unknown"), 404, "job_not_found")


def test_the_models_list_gives_each_version_its_test_size_interval_chance_and_calibration(
        client: TestClient, settings: Settings) -> None:
    """What the page's models table and prediction read of each version."""
    registry = LocalRegistry(settings.models_dir)
    publish_random(registry, seed=3, extra={
        "metrics": {"test": {"images": 15, "balanced_accuracy": 0.33,
                             "balanced_accuracy_ci": [0.13, 0.6]}},
        "calibration": {"temperature": 19.9999, "at_bound": "upper"}})
    (summary,) = client.get("/models").json()["versions"]
    assert summary["test_images"] == 15 and summary["balanced_accuracy_ci"] == [0.13, 0.6]
    assert summary["chance"] == pytest.approx(1 / 3)
    assert summary["better_than_chance"] is False  # its interval includes chance
    assert summary["calibration"]["at_bound"] == "upper"


def test_models_when_empty_and_unknown_versions(client: TestClient) -> None:
    listing = client.get("/models").json()
    assert listing == {"active": None, "versions": [], "shadow": None,
                       "serving": {"version": None, "load_error": None, "runtime": None,
                                   "precision": None}}
    _error(client.get("/models/20260101-000000-abcdef"), 404, "model_not_found")
    _error(client.get("/models/../../etc/passwd"), 404, "not_found")
    _error(client.post("/models/nonsense/activate"), 404, "model_not_found")
    _error(client.get("/models/nonsense/curves.png"), 404, "model_not_found")


def test_oversized_bodies_are_refused_early(settings: Settings) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 2048})
    with TestClient(create_app(small)) as client:
        response = client.post("/predict", files={"file": ("x.png", b"\0" * 4096)})
    _error(response, 413, "payload_too_large")


def test_openapi_documents_every_route_and_the_error_model(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/retrain", "/jobs", "/jobs/{job_id}", "/models", "/models/{version}",
            "/models/{version}/activate", "/models/{version}/{artifact}",
            "/models/{version}/evaluations", "/datasets",
            "/healthz", "/readyz"} <= set(schema["paths"])
    assert {"ErrorResponse", "Prediction", "TrainingParams", "JobStatus", "MonitoredList"} <= set(
        schema["components"]["schemas"])
    predict_responses = schema["paths"]["/predict"]["post"]["responses"]
    assert predict_responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorResponse")
    assert client.get("/docs").status_code == 200


def test_openapi_documents_refusals_without_a_key_and_every_422_as_an_error(
    client: TestClient,
) -> None:
    for path, item in client.get("/openapi.json").json()["paths"].items():
        for method, operation in item.items():
            documented = operation["responses"]
            if operation.get("security"):
                assert "401" in documented, (method, path)
            if "422" in documented:  # not FastAPI's default HTTPValidationError
                body = documented["422"]["content"]["application/json"]["schema"]
                # the Open Inference Protocol's routes answer in the protocol's shape
                shape = "/ProtocolError" if path.startswith("/v2") else "/ErrorResponse"
                assert body["$ref"].endswith(shape), (method, path)


def test_a_405_names_every_method_of_the_path(client: TestClient) -> None:
    # Starlette would name those of the first route matching the path only.
    for path, allow in (("/datasets", "GET, POST"), ("/jobs/abc", "DELETE, GET"),
                        ("/models/v1/activate", "POST"), ("/healthz", "GET")):
        response = client.put(path)
        _error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allow, path


def test_an_unreachable_job_store_is_a_503_not_a_crash(tmp_path: Path) -> None:
    # Nothing listens on port 1: what the API sees while Redis is down.
    down = Settings(data_dir=tmp_path / "d", models_dir=tmp_path / "m", state_dir=tmp_path / "s",
                    broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(down)) as client:
        _error(client.get("/jobs"), 503, "broker_unavailable")
        _error(client.get("/jobs/abc"), 503, "broker_unavailable")
        assert client.get("/readyz").json()["broker"] == "unreachable"
        assert client.get("/healthz").status_code == 200


def test_cors_is_off_by_default_and_on_for_configured_origins(settings: Settings) -> None:
    preflight = {"Origin": "https://viewer.example.org", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(settings)) as closed:
        response = closed.options("/predict", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    opened = settings.model_copy(update={"cors_origins": ["https://viewer.example.org"]})
    with TestClient(create_app(opened)) as client:
        allowed = client.options("/predict", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://viewer.example.org"
        other = client.options("/predict", headers={**preflight, "Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers


def test_predict_with_explain_returns_the_same_answer_and_a_heat_map(
        settings: Settings, radiography_root: Path) -> None:
    registry = LocalRegistry(settings.models_dir)
    version = publish_random(registry, seed=8)
    registry.activate(version)
    image = sample_files(radiography_root, 1)["Normal"][0].read_bytes()
    with TestClient(create_app(settings), headers=AS_ADMIN) as client:
        wait_ready(client)
        plain = client.post("/predict", files={"file": ("x.png", image)}).json()
        response = client.post("/predict?explain=true", files={"file": ("x.png", image)})
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == version
        answer = response.json()
        assert answer["label"] == plain["label"] and plain["explanation"] is None
        for label, p in plain["probabilities"].items():
            assert answer["probabilities"][label] == pytest.approx(p, abs=1e-5)
        explanation = answer["explanation"]
        assert explanation["class_name"] == answer["label"]
        assert explanation["layer"] == "block3_conv3" and explanation["method"] == "grad-cam"
        # "auto" on a 32 px model: block3_conv3's 8 x 8, not block5_conv3's 2 x 2
        assert explanation["grid_shape"] == [8, 8] and len(explanation["grid"]) == 8
        assert base64.b64decode(explanation["overlay_png"]).startswith(b"\x89PNG")
        other = client.post("/predict?explain_class=c", files={"file": ("x.png", image)})
        assert other.status_code == 200 and other.json()["explanation"]["class_name"] == "c"
        _error(client.post("/predict?explain_class=Pneumothorax",
                           files={"file": ("x.png", image)}), 422, "unknown_class")


def test_a_redirect_names_a_path_whatever_the_host_header_says(client: TestClient) -> None:
    for path in ("/models/", "/datasets/", "/jobs/"):
        moved = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert moved.status_code == 307 and moved.headers["location"] == path.rstrip("/")


def test_a_large_image_is_decoded_as_the_serving_version_was_trained(
        client: TestClient, settings: Settings, radiography_root: Path) -> None:
    import io

    from PIL import Image

    from shared.loading import load_version
    from shared.ml.preprocessing import PreprocessOptions, decode_image, preprocessing_id

    registry = LocalRegistry(settings.models_dir)
    options = PreprocessOptions(reduce_large=True)
    version = publish_random(registry, seed=5, activate=True, extra={
        "preprocessing": preprocessing_id(options), "preprocessing_options": options.as_dict()})
    wait_ready(client)
    with Image.open(sample_files(radiography_root, 1)["COVID"][0]) as film:
        buffer = io.BytesIO()
        film.convert("L").resize((1600, 2000), Image.Resampling.BICUBIC).save(buffer, "PNG")
    data = buffer.getvalue()
    served = load_version(registry, version)
    reduced = served.predict(served.decode(data, 10**8).gray).probabilities
    full = served.predict(decode_image(data).gray).probabilities
    for explain in (False, True):
        answer = client.post("/predict", params={"explain": explain},
                             files={"file": ("big.png", data)})
        assert answer.status_code == 200, answer.text
        got = answer.json()["probabilities"]
        # what the version computes from the reduced decode, not from the full-size one
        assert max(abs(got[c] - reduced[c]) for c in got) < 1e-6, (explain, got, reduced)
        assert max(abs(got[c] - full[c]) for c in got) > 1e-5, (explain, got, full)


def test_several_images_get_one_answer_each_in_order_and_a_bad_one_fails_alone(
        settings: Settings, radiography_root: Path) -> None:
    registry = LocalRegistry(settings.models_dir)
    version = publish_random(registry, seed=9, activate=True)
    films = [files[0].read_bytes() for files in sample_files(radiography_root, 1).values()]
    parts = [("file", (f"{i}.png", data)) for i, data in enumerate(films)]
    parts.insert(1, ("file", ("notes.png", b"just some text, not an image")))
    limited = settings.model_copy(update={"max_images_per_request": len(parts)})
    with TestClient(create_app(limited), headers=AS_ADMIN) as client:
        wait_ready(client)
        singles = [client.post("/predict", files={"file": ("x.png", data)}).json()
                   for data in films]
        response = client.post("/predict", files=parts)
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == version
        body = response.json()
        assert body["model_version"] == version
        entries = body["images"]
        assert [e["filename"] for e in entries] == ["0.png", "notes.png", "1.png", "2.png"]
        assert [e["index"] for e in entries] == [0, 1, 2, 3]
        bad = entries.pop(1)
        assert bad["status"] == 400 and bad["prediction"] is None
        assert bad["error"]["code"] == "invalid_image" and bad["error"]["message"]
        for entry, single in zip(entries, singles, strict=True):
            assert entry["status"] == 200 and entry["error"] is None
            answer = entry["prediction"]
            assert answer["label"] == single["label"]
            for label, p in single["probabilities"].items():
                assert answer["probabilities"][label] == pytest.approx(p, abs=1e-5)
        too_many = client.post("/predict", files=[*parts, parts[0]])
        _error(too_many, 413, "too_many_images")
        explained = client.post("/predict?explain=true", files=parts[2:]).json()["images"]
        assert [e["prediction"]["explanation"]["class_name"] == e["prediction"]["label"]
                for e in explained] == [True, True]
