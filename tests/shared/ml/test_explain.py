"""Grad-CAM: the map falls where the evidence is, and comes from the pass that answered."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from shared.errors import ExplanationUnavailable, UnknownClass
from shared.loading import load_version
from shared.ml.chest_gate import gate_features
from shared.ml.explain import CAM_LAYERS, GradCam, choose_layer, explain, grid_side, render
from shared.ml.modeling import CAM_LAYER, ModelConfig, build_model
from shared.ml.preprocessing import DecodedImage, decode_grayscale
from shared.ml.screening import ImageLimits, Screened
from shared.ml.served import ServedVersion, serve_model
from shared.ml.shift import INPUT, Detector, Energy, ShiftReference, block_slices
from shared.schemas import Prediction
from tests.helpers.env import sample_files
from tests.helpers.versions import Trained

SIZE = 64  # block5_conv3 is 4 x 4 at this size, block4_conv3 8 x 8, block3_conv3 16 x 16


@pytest.fixture(scope="module")
def bright_patch_model() -> Any:
    """A VGG16 whose every convolution passes its first channel through (centre tap 1) and
    whose head says "present" in proportion to that channel's mean: the decision depends
    only on where the image is bright, nothing else."""
    model = build_model(ModelConfig(num_classes=2, image_size=SIZE))
    for layer in model.layers:
        if "_conv" in layer.name:
            kernel, bias = (np.zeros(tuple(w.shape), np.float32) for w in layer.weights)
            kernel[1, 1, 0, 0] = 1.0
            layer.set_weights([kernel, bias])
    kernel = np.zeros((512, 2), np.float32)
    kernel[0] = [-0.05, 0.05]  # class 1, "present", rises with the patch
    model.get_layer("predictions").set_weights([kernel, np.zeros(2, np.float32)])
    return model


def _screened(loaded: ServedVersion, gray: np.ndarray) -> Screened:
    return loaded.screen(DecodedImage(gray.astype(np.float32)), "off")


def _patch(top: int, left: int, side: int = 16) -> np.ndarray:
    pixels = np.zeros((SIZE, SIZE, 3), np.float32)
    pixels[top:top + side, left:left + side] = 255.0
    return pixels


@pytest.mark.parametrize(("top", "left"), [(0, 0), (48, 48), (0, 48), (16, 16)])
def test_the_map_falls_on_the_region_the_decision_depends_on(bright_patch_model: Any,
                                                              top: int, left: int) -> None:
    activation = GradCam(bright_patch_model, with_features=False)(_patch(top, left))
    assert activation.index == 1 and activation.probabilities[1] > 0.5
    heatmap = activation.heatmap
    assert heatmap.shape == (SIZE // 16, SIZE // 16) and heatmap.max() == pytest.approx(1.0)
    cell = slice(top // 16, top // 16 + 1), slice(left // 16, left // 16 + 1)
    assert heatmap[cell].sum() / heatmap.sum() > 0.95


@pytest.mark.parametrize("layer", ["block4_conv3", "block3_conv3"])
def test_a_finer_layer_maps_a_patch_smaller_than_block5s_cells(bright_patch_model: Any,
                                                               layer: str) -> None:
    """An 8 px patch inside one of block5's 16 px cells: a finer layer's gradient, taken
    back through block5, puts the map on the patch's own cells, and nowhere else."""
    side = SIZE // (8 if layer == "block4_conv3" else 4)
    step = SIZE // side
    activation = GradCam(bright_patch_model, with_features=False, layer=layer)(
        _patch(40, 8, side=8))
    assert activation.index == 1
    heatmap = activation.heatmap
    assert heatmap.shape == (side, side)
    rows, cols = slice(40 // step, 48 // step), slice(8 // step, 16 // step)
    assert heatmap[rows, cols].sum() / heatmap.sum() > 0.95


def test_the_class_the_evidence_speaks_against_gets_an_empty_map(
        bright_patch_model: Any) -> None:
    activation = GradCam(bright_patch_model, with_features=False)(_patch(0, 0), index=0)
    assert activation.index == 0
    assert not activation.heatmap.any()


def _loaded(model: Any, classes: list[str], temperature: float,
            shift: ShiftReference | None) -> ServedVersion:
    return serve_model("v1", classes, SIZE, model, temperature=temperature, shift=shift)


def test_the_explained_answer_is_the_served_answer(radiography_root: Path) -> None:
    import keras

    keras.utils.set_random_seed(5)
    model = build_model(ModelConfig(num_classes=3, image_size=SIZE))
    # every kind of detector: block statistics, the input's features, the logits' energy
    slices = block_slices(model)
    start, stop = slices["block3_pool"]
    n_input = len(gate_features(np.zeros((SIZE, SIZE))))
    kernel, bias = model.get_layer("predictions").get_weights()
    shift = ShiftReference(
        detectors=(Detector("block3_pool", start, stop, np.zeros((3, stop - start)),
                            np.eye(stop - start)),
                   Detector(INPUT, 0, 0, np.zeros((1, n_input)), np.eye(n_input))),
        energy=Energy(*slices["block5_pool:mean"], kernel, bias),
        threshold=10.0, quantile=0.99)
    loaded = _loaded(model, ["COVID", "Normal", "Viral Pneumonia"], 1.7, shift)
    path = sample_files(radiography_root, 1)["COVID"][0]
    gray = decode_grayscale(path.read_bytes(), 10**8)
    served, explained = loaded.predict(gray), explain(loaded, _screened(loaded, gray))
    assert_same_answer(explained, served)
    assert explained.explanation is not None
    assert explained.explanation.layer == "block4_conv3"  # "auto" at 64 px
    assert explained.explanation.grid_shape == [8, 8]
    assert explained.explanation.class_name == served.label
    image, overlay = (Image.open(io.BytesIO(base64.b64decode(png))) for png in
                      (explained.explanation.image_png, explained.explanation.overlay_png))
    assert image.size == overlay.size == gray.shape[::-1]  # the upload's size, under 512
    assert image.mode == "L" and overlay.mode == "RGB"
    assert served.explanation is None


def test_a_named_class_is_explained_and_an_unknown_one_refused(bright_patch_model: Any) -> None:
    loaded = _loaded(bright_patch_model, ["absent", "present"], 1.0, None)
    gray = _patch(0, 0)[..., 0]
    answer = explain(loaded, _screened(loaded, gray), "absent")
    assert answer.label == "present" and answer.explanation is not None
    assert answer.explanation.class_name == "absent"
    grid = np.asarray(answer.explanation.grid)
    assert grid.shape == (8, 8) and not grid.any()
    with pytest.raises(UnknownClass):
        explain(loaded, _screened(loaded, gray), "Pneumothorax")


@pytest.mark.parametrize(("layer", "shape"), [("auto", [8, 8]), (CAM_LAYER, [4, 4]),
                                               ("block4_conv3", [8, 8]),
                                               ("block3_conv3", [16, 16])])
def test_the_answer_names_its_layer_and_grid_and_keeps_the_passs_probabilities(
        bright_patch_model: Any, layer: Any, shape: list[int]) -> None:
    loaded = _loaded(bright_patch_model, ["absent", "present"], 1.3, None)
    gray = _patch(16, 32)[..., 0]
    served = loaded.predict(gray)
    answer = explain(loaded, _screened(loaded, gray), layer=layer)
    assert answer.explanation is not None
    assert answer.explanation.layer == (layer if layer != "auto" else "block4_conv3")
    assert answer.explanation.grid_shape == shape
    assert np.asarray(answer.explanation.grid).shape == tuple(shape)
    assert answer.label == served.label == "present"
    for label, p in served.probabilities.items():
        assert answer.probabilities[label] == pytest.approx(p, abs=1e-5)


def test_an_unknown_layer_is_refused_with_the_names_there_are(bright_patch_model: Any) -> None:
    loaded = _loaded(bright_patch_model, ["absent", "present"], 1.0, None)
    gray = _patch(0, 0)[..., 0]
    with pytest.raises(ExplanationUnavailable, match="block4_conv3"):
        explain(loaded, _screened(loaded, gray), layer="block1_conv1")  # type: ignore[arg-type]


def test_auto_keeps_block5_where_its_grid_is_fine_enough_and_goes_finer_where_not() -> None:
    assert [grid_side(layer, 64) for layer in CAM_LAYERS] == [4, 8, 16]
    assert [grid_side(layer, 224) for layer in CAM_LAYERS] == [14, 28, 56]
    assert choose_layer("auto", 224) == CAM_LAYER  # 14 x 14: as before
    assert choose_layer("auto", 128) == CAM_LAYER
    assert choose_layer("auto", 64) == "block4_conv3"
    assert choose_layer("auto", 32) == "block3_conv3"
    assert choose_layer("block5_conv3", 32) == CAM_LAYER  # asked for: as asked


def test_the_overlay_draws_each_cell_as_one_block() -> None:
    """A 2 x 2 map over a 64 px image: four uniform 32 px blocks, no blend between them."""
    heatmap = np.array([[1.0, 0.0], [0.25, 0.5]], np.float32)
    gray = np.full((64, 64), 100.0, np.float32)
    _, overlay_png = render(gray, heatmap)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(overlay_png))))
    for rows, cols in [(slice(0, 32), slice(0, 32)), (slice(0, 32), slice(32, 64)),
                       (slice(32, 64), slice(0, 32)), (slice(32, 64), slice(32, 64))]:
        block = overlay[rows, cols].reshape(-1, 3)
        assert (block == block[0]).all()
    assert len({tuple(overlay[r, c]) for r in (0, 63) for c in (0, 63)}) == 4


def test_a_trained_versions_maps_come_from_the_pass_that_answered(trained: Trained) -> None:
    """The suite's trained version (32 px: block5_conv3 is 2 x 2), with its shift reference
    and gate: on every layer, the answer is the served one and the grid is what it says."""
    loaded = load_version(trained.registry, trained.version)
    data = next((trained.dataset / "COVID" / "images").iterdir()).read_bytes()
    screened = loaded.screen_file(data, ImageLimits(gate="warn"))
    served = loaded.predict_batch(screened.pixels[None])[0]
    for layer, side in (("auto", 8), ("block5_conv3", 2), ("block4_conv3", 4),
                        ("block3_conv3", 8)):
        answer = explain(loaded, screened, layer=layer)  # type: ignore[arg-type]
        assert answer.explanation is not None
        assert answer.explanation.grid_shape == [side, side]
        assert np.asarray(answer.explanation.grid).shape == (side, side)
        assert_same_answer(answer, served)


def assert_same_answer(explained: Prediction, served: Prediction) -> None:
    """The explained pass answers as the plain one: label, probabilities and shift score."""
    assert explained.label == served.label
    for label, p in served.probabilities.items():
        assert explained.probabilities[label] == pytest.approx(p, abs=1e-5)
    assert served.distribution_shift is not None and explained.distribution_shift is not None
    assert explained.distribution_shift.score == pytest.approx(
        served.distribution_shift.score, rel=1e-4)
