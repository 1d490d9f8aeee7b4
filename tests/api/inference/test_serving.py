"""Hot reload: load, verify, warm up, swap; failed loads reported; no request lost to a swap;
versions served from object storage."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.inference.serving import ModelServer
from api.main import create_app
from shared.config import Settings
from shared.errors import NoActiveModel
from shared.registry import Registry
from shared.registry.local import LocalRegistry
from shared.registry.objects import ObjectStoreRegistry
from tests.helpers.env import sample_files
from tests.helpers.services import S3Server
from tests.helpers.versions import Trained, publish_random, wait_ready


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = LocalRegistry(tmp_path_factory.mktemp("models"))
    for seed in (1, 2):
        publish_random(registry, seed)
    return registry


def _pixels() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)


def test_nothing_active_means_no_model(tmp_path: Path) -> None:
    server = ModelServer(LocalRegistry(tmp_path), poll_interval_s=0.1)
    server.check()
    with pytest.raises(NoActiveModel, match="retrain"):
        server.model()


def test_swap_follows_the_active_pointer_and_rolls_back(registry: Registry) -> None:
    v_old, v_new = sorted(m.version for m in registry.versions())
    server = ModelServer(registry, poll_interval_s=0.1)
    registry.activate(v_old)
    server.check()
    before = server.model()
    assert before.version == v_old
    registry.activate(v_new)
    server.check()
    assert server.model().version == v_new
    # the request that took the old reference still computes on the old model
    assert before.version == v_old and before.probabilities(_pixels()[None]).shape == (1, 3)
    registry.activate(v_old)
    server.check()
    assert server.model().version == v_old


def test_a_corrupt_version_is_reported_and_the_previous_keeps_serving(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path)
    good = publish_random(registry, 3)
    bad = publish_random(registry, 4)
    registry.activate(good)
    server = ModelServer(registry, poll_interval_s=0.1)
    server.check()
    model_file = registry.model_path(bad)
    model_file.write_bytes(model_file.read_bytes()[:1000])
    registry.activate(bad)
    server.check()
    assert server.model().version == good
    assert server.load_error is not None and bad in server.load_error
    registry.activate(good)
    server.check()
    assert server.load_error is None and server.model().version == good


def test_no_request_fails_during_repeated_swaps(registry: Registry) -> None:
    versions = sorted(m.version for m in registry.versions())
    registry.activate(versions[0])
    server = ModelServer(registry, poll_interval_s=0.05)
    server.check()
    server.start()
    stop = threading.Event()
    answered: list[str] = []
    failures: list[BaseException] = []

    def client() -> None:
        while not stop.is_set():
            try:
                model = server.model()
                probabilities = model.probabilities(_pixels()[None])[0]
                assert abs(float(probabilities.sum()) - 1) < 1e-4
                answered.append(model.version)
            except BaseException as exc:  # collect, the assertion below reports it
                failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(6):
            target = versions[(i + 1) % 2]
            registry.activate(target)
            server.wake()
            deadline = time.monotonic() + 60  # a load under load, on 2 busy cores
            while time.monotonic() < deadline and server.model().version != target:
                time.sleep(0.05)
            assert server.model().version == target
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop()
    assert failures == []
    assert set(answered) == set(versions)


def test_served_probabilities_are_the_temperature_scaled_ones(tmp_path: Path) -> None:
    from shared.loading import load_version
    from shared.ml.calibration import apply_temperature
    from shared.ml.preprocessing import to_model_input

    local = LocalRegistry(tmp_path)
    version = publish_random(local, 6, extra={"calibration": {"temperature": 2.5}})
    loaded = load_version(local, version)
    assert loaded.temperature == 2.5  # read from the manifest
    raw = np.asarray(loaded.model(to_model_input(_pixels()[None]), training=False))
    np.testing.assert_allclose(loaded.probabilities(_pixels()[None]),
                               apply_temperature(raw, 2.5), rtol=1e-6)


def test_a_version_needing_unknown_preprocessing_is_not_served(tmp_path: Path) -> None:
    import json

    registry = LocalRegistry(tmp_path)
    version = publish_random(registry, 5)
    manifest_file = registry.version_dir(version) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "preprocessing": "some-future-pipeline"}))
    registry.activate(version)
    server = ModelServer(registry, poll_interval_s=0.1)
    server.check()
    assert server.current is None
    assert server.load_error is not None and "some-future-pipeline" in server.load_error


def test_a_replaced_version_is_released_once_its_last_request_lets_go(
        registry: Registry) -> None:
    import gc
    import weakref

    v_old, v_new = sorted(m.version for m in registry.versions())
    server = ModelServer(registry, poll_interval_s=0.1)
    registry.activate(v_old)
    server.check()
    in_flight = server.model()  # a request still computing on the old version
    registry.activate(v_new)
    server.check()
    server.release_retired()
    assert server._retired is not None and server._retired() is in_flight  # still waited on
    gone = weakref.ref(in_flight)
    del in_flight  # the request answers
    server.release_retired()
    assert server._retired is None
    gc.collect()
    assert gone() is None  # nothing else kept the old version alive
    assert server.model().version == v_new


def test_the_api_serves_versions_from_object_storage(
        s3_server: S3Server, tmp_path: Path, radiography_root: Path) -> None:
    uri = f"s3://{s3_server.new_bucket()}/models"
    publisher = ObjectStoreRegistry(uri, tmp_path / "worker-cache", s3_server.endpoint)
    first, second, third = (publish_random(publisher, seed) for seed in (1, 2, 3))
    publisher.activate(first)
    settings = Settings(data_dir=tmp_path / "data", state_dir=tmp_path / "state",
                        models_uri=uri, s3_endpoint_url=s3_server.endpoint,
                        reload_interval_s=0.2, inference_runtime="tensorflow")
    image = sample_files(radiography_root, 1)["COVID"][0].read_bytes()
    cache = settings.effective_model_cache_dir
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        answer = client.post("/predict", files={"file": ("x.png", image, "image/png")})
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == first
        listed = client.get("/models").json()
        assert listed["active"] == first
        assert {m["version"] for m in listed["versions"]} == {first, second, third}
        assert (cache / first / "model.keras").is_file()
        for version in (second, third):
            publisher.activate(version)
            wait_until_serving(client, image, version)
    # The served and the replaced version stay cached (a swap back is quick); older ones go.
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [second, third])


def wait_until_serving(client: TestClient, image: bytes, version: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = client.post("/predict", files={"file": ("x.png", image, "image/png")})
        if answer.headers.get("X-Model-Version") == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"not serving {version}")


def test_an_unreachable_store_answers_503_and_keeps_serving(
        s3_server: S3Server, tmp_path: Path, radiography_root: Path) -> None:
    uri = f"s3://{s3_server.new_bucket()}/models"
    publisher = ObjectStoreRegistry(uri, tmp_path / "worker-cache", s3_server.endpoint)
    version = publish_random(publisher, 1)
    publisher.activate(version)
    settings = Settings(data_dir=tmp_path / "data", state_dir=tmp_path / "state",
                        models_uri=uri, s3_endpoint_url=s3_server.endpoint,
                        reload_interval_s=0.2, inference_runtime="tensorflow")
    image = sample_files(radiography_root, 1)["COVID"][0].read_bytes()
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        # The store goes away: reads of the registry say so, predictions go on.
        client.app.state.registry.bucket = "cxr-no-such-bucket"  # type: ignore[attr-defined]
        listed = client.get("/models")
        assert listed.status_code == 503, listed.text
        assert listed.json()["error"]["code"] == "registry_unavailable"
        assert listed.headers["Retry-After"]
        answer = client.post("/predict", files={"file": ("x.png", image, "image/png")})
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == version


def test_the_api_says_which_precision_serves_and_answers(
        trained: Trained, int8_copy: tuple[LocalRegistry, str], settings: Settings) -> None:
    # (CXR_INFERENCE_PRECISION=float32 never serving it: tests/worker/publishing/test_int8.py)
    registry, version = int8_copy
    image = next((trained.dataset / "Normal" / "images").iterdir()).read_bytes()
    chosen = settings.model_copy(update={"models_dir": registry.root,
                                         "inference_precision": "int8"})
    with TestClient(create_app(chosen)) as client:
        wait_ready(client)
        ready = client.get("/readyz").json()
        assert (ready["model_runtime"], ready["model_precision"]) == ("onnx", "int8")
        assert client.get(f"/models/{version}").json()["serving"]["precision"] == "int8"
        assert client.get("/models").json()["serving"]["precision"] == "int8"
        answer = client.post("/predict", files={"file": ("x.png", image)}).json()
        assert answer["precision"] == "int8"
        # heat maps come from the float Keras model whatever serves plain answers
        explained = client.post("/predict?explain=true", files={"file": ("x.png", image)})
        assert explained.json()["precision"] == "float32" and explained.json()["explanation"]
