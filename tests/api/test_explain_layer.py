"""``/predict?explain_layer=``: a heat map says how coarse it is, a 64 px version's default
map is finer than block5's 4 x 4, and a layer that is not offered is refused by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from shared.registry.local import LocalRegistry
from shared.schemas import ExplainLayer
from tests.helpers.env import API_KEYS, AS_ADMIN, sample_files
from tests.helpers.versions import publish_random, wait_ready


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app serving a random-weight 64 px version (block5_conv3 is 4 x 4 there)."""
    root = tmp_path_factory.mktemp("explain-layer")
    settings = Settings(data_dir=root / "data", models_dir=root / "models",
                        state_dir=root / "state", broker_url=None, export_onnx=False,
                        api_keys=API_KEYS)
    publish_random(LocalRegistry(settings.models_dir), seed=3, size=64, activate=True)
    with TestClient(create_app(settings), headers=AS_ADMIN) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def film(radiography_root: Path) -> bytes:
    return sample_files(radiography_root, 1)["Normal"][0].read_bytes()


def _predict(client: TestClient, film: bytes, **params: Any) -> dict[str, Any]:
    response = client.post("/predict", params=params, files={"file": ("x.png", film)})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize(("params", "layer", "side"), [
    ({"explain": True}, "block4_conv3", 8),  # "auto" at 64 px: not block5's 4 x 4
    ({"explain_layer": "auto"}, "block4_conv3", 8),
    ({"explain_layer": "block5_conv3"}, "block5_conv3", 4),
    ({"explain_layer": "block4_conv3"}, "block4_conv3", 8),
    ({"explain_layer": "block3_conv3", "explain_class": "b"}, "block3_conv3", 16),
])
def test_the_map_says_its_layer_and_grid_and_answers_as_the_plain_pass(
        client: TestClient, film: bytes, params: dict[str, Any], layer: str,
        side: int) -> None:
    plain = _predict(client, film)
    answer = _predict(client, film, **params)  # explain_layer alone implies explain
    explanation = answer["explanation"]
    assert explanation["layer"] == layer
    assert explanation["grid_shape"] == [side, side]
    assert [len(row) for row in explanation["grid"]] == [side] * side
    assert explanation["class_name"] == params.get("explain_class", plain["label"])
    assert answer["label"] == plain["label"]
    for label, p in plain["probabilities"].items():
        assert answer["probabilities"][label] == pytest.approx(p, abs=1e-5)


def test_an_unknown_layer_is_refused_with_the_names_there_are(client: TestClient,
                                                              film: bytes) -> None:
    response = client.post("/predict", params={"explain_layer": "block1_conv1"},
                           files={"file": ("x.png", film)})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["loc"] == ["query", "explain_layer"]
    for name in get_args(ExplainLayer):
        assert name in error["message"]


def test_the_layers_are_listed_in_the_api_description(client: TestClient) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["parameters"]
    (layer,) = [p for p in parameters if p["name"] == "explain_layer"]
    schema = layer["schema"]["anyOf"][0]
    assert schema["enum"] == list(get_args(ExplainLayer))
