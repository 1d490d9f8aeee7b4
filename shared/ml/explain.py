"""Where the network looked: Grad-CAM on a VGG16 convolution, in the same pass as the prediction.

Grad-CAM (Selvaraju et al., ICCV 2017; keras-io ``examples/vision/grad_cam.py``) weighs each
channel of a convolution by the mean gradient of the class score over it, sums, and keeps
the positive part. The class score is the logit (the softmax's input), as in the paper:
the softmax's own gradient vanishes for a confident class. The same forward pass gives the
probabilities (calibrated as served) and the shift features, so the map explains exactly the
answer returned with it.

The last convolution, ``block5_conv3``, is 1/16 of the input a side: 14x14 at 224 px, but 4x4
at 64 px and 2x2 at 32 px, too coarse to point at anything in a chest. A finer convolution
maps the same logit, its gradient taken back through block5 (bench/explain_layers.py scores
each by the deletion metric); ``choose_layer`` picks one by the version's size.
"""

from __future__ import annotations

import base64
import io
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
from PIL import Image

from shared.errors import ExplanationUnavailable, UnknownClass
from shared.ml.modeling import CAM_LAYER, OUTPUT_LAYER, POOL_LAYER
from shared.ml.preprocessing import to_model_input
from shared.ml.screening import Screened
from shared.ml.served import ServedVersion
from shared.ml.shift import STATS_LAYOUT, shift_features
from shared.schemas import CamLayer, ExplainLayer, Explanation, Prediction

# The layers a map can be computed on, deepest (coarsest) first.
CAM_LAYERS: tuple[CamLayer, ...] = get_args(CamLayer)
# "auto": the deepest of them whose grid has at least this many cells a side. At 64 px
# block4_conv3's 8x8 is as faithful as block5_conv3's 4x4 by the deletion metric and
# block3_conv3's 16x16 less so (bench/explain_layers.py); 224 px keeps block5's 14x14.
MIN_GRID_SIDE = 8
OVERLAY_MAX_SIDE = 512
# Each served version's Grad-CAM networks by layer, built on the first request for each;
# dropped with the version (written under the version's lock).
_CAMS: weakref.WeakKeyDictionary[ServedVersion, dict[str, GradCam]] = \
    weakref.WeakKeyDictionary()


def grid_side(layer: CamLayer, image_size: int) -> int:
    """The side of ``layer``'s map for a square input of ``image_size``: VGG16's pools each
    halve it (rounding down), and blockN_conv3 comes after N - 1 of them."""
    return image_size >> (CAM_LAYERS[::-1].index(layer) + 2)


def choose_layer(requested: ExplainLayer, image_size: int) -> CamLayer:
    """The layer asked for, or for "auto" the deepest whose grid is at least MIN_GRID_SIDE
    a side at ``image_size`` (the finest there is where none is)."""
    if requested != "auto":
        return requested
    return next((layer for layer in CAM_LAYERS
                 if grid_side(layer, image_size) >= MIN_GRID_SIDE), CAM_LAYERS[-1])


def _tail(model: Any, layer: str) -> list[Any]:
    """The layers from ``layer``'s output to the dense layer's input: build_model's graph is
    a chain, so its layer list is their order (the dropout is inert outside training)."""
    names = [candidate.name for candidate in model.layers]
    try:
        start, stop = names.index(layer) + 1, names.index(POOL_LAYER) + 1
    except ValueError as exc:
        raise ExplanationUnavailable(
            f"this version's network lacks {layer} or {POOL_LAYER}") from exc
    return list(model.layers[start:stop])


@dataclass(frozen=True)
class ClassActivation:
    """One image's pass: raw softmax probabilities, shift features, and the map (h x w, in
    [0, 1], all zeros where no location speaks for the class) of class ``index``."""

    probabilities: np.ndarray
    features: np.ndarray | None
    index: int
    heatmap: np.ndarray


class GradCam:
    """Grad-CAM for a classifier built by ``shared.ml.modeling.build_model``.

    The base up to the map runs as one graph, without a gradient tape; only what follows the
    map (for ``block5_conv3`` the pooling, for an earlier layer the later blocks too) and the
    dense layer run under the tape: recording the whole VGG16 costs several forward passes
    (bench/explain_latency.py).
    """

    def __init__(self, model: Any, with_features: bool, layout: str = STATS_LAYOUT,
                 layer: str = CAM_LAYER) -> None:
        import keras
        import tensorflow as tf

        try:
            conv = model.get_layer(layer)
            self._dense = model.get_layer(OUTPUT_LAYER)
        except ValueError as exc:
            raise ExplanationUnavailable(
                f"this version's network lacks {layer} or {OUTPUT_LAYER}") from exc
        self._head = _tail(model, layer)
        # The shift features come out of the graph as served (the layers after the map run
        # twice for them, once here and once under the tape).
        outputs = [conv.output] + ([shift_features(model, layout)] if with_features else [])
        base = keras.Model(model.input, outputs)
        size = int(model.input.shape[1])
        self._base = tf.function(lambda batch: base(batch, training=False),
                                 input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])

    def __call__(self, pixels: np.ndarray, index: int | None = None) -> ClassActivation:
        """``pixels``: one (size, size, 3) image in [0, 255]; ``index``: the class to
        explain, the predicted one by default."""
        import tensorflow as tf

        outputs = self._base(tf.convert_to_tensor(to_model_input(pixels[None])))
        # Keras hands back a lone output as itself, not as a list of one
        maps, *features = outputs if isinstance(outputs, list | tuple) else [outputs]
        maps = tf.cast(maps, tf.float32)  # mixed-precision versions compute in float16
        with tf.GradientTape() as tape:
            tape.watch(maps)
            pooled = maps
            for layer in self._head:
                pooled = layer(pooled, training=False)
            logits = tf.matmul(pooled, tf.cast(self._dense.kernel, tf.float32))
            logits += tf.cast(self._dense.bias, tf.float32)
            chosen = int(np.argmax(logits[0])) if index is None else index
            score = logits[0, chosen]
        grads = tape.gradient(score, maps)[0]
        weights = tf.reduce_mean(grads, axis=(0, 1))
        cam = tf.nn.relu(tf.reduce_sum(maps[0] * weights, axis=-1)).numpy()
        peak = float(cam.max())
        return ClassActivation(
            probabilities=tf.nn.softmax(logits)[0].numpy(),
            features=np.asarray(features[0]) if features else None,
            index=chosen,
            heatmap=cam / peak if peak > 0 else np.zeros_like(cam),
        )


def _hot(values: np.ndarray) -> np.ndarray:
    """Matplotlib's 'hot' colour map (black, red, yellow, white) for values in [0, 1]."""
    return np.asarray(np.clip(np.stack([3 * values, 3 * values - 1, 3 * values - 2], axis=-1),
                              0, 1))


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")  # optimize=True: 4x the time, -10% size
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render(gray: np.ndarray, heatmap: np.ndarray) -> tuple[str, str]:
    """The image (a float gray HxW in [0, 255], as prepared for the model before resizing)
    and the heat map stretched over it, blended by its own strength: base64 PNGs, at most
    OVERLAY_MAX_SIDE pixels on the longest side."""
    height, width = gray.shape[:2]
    scale = min(1.0, OVERLAY_MAX_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.float32), mode="F")
    plane = np.asarray(image.resize(size, Image.Resampling.BILINEAR), np.float32) / 255.0
    # The model saw the image stretched to a square: the map stretches back the same way.
    # Nearest, not a smooth blend: each cell is drawn as the block it is, so a 4x4 map
    # looks as coarse as it is instead of precise.
    heat = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
        size, Image.Resampling.NEAREST), np.float32).clip(0, 1)
    alpha = 0.6 * heat[..., None]
    blended = (1 - alpha) * plane[..., None] + alpha * _hot(heat)
    return (_png((plane * 255 + 0.5).astype(np.uint8)),
            _png((blended * 255 + 0.5).astype(np.uint8)))


def _cam(loaded: ServedVersion, layer: str) -> GradCam:
    """The version's Grad-CAM network for ``layer``; call under the version's lock."""
    cams = _CAMS.setdefault(loaded, {})
    if layer not in cams:
        cams[layer] = GradCam(loaded.model, with_features=loaded.shift is not None,
                              layout=loaded.shift.layout if loaded.shift else STATS_LAYOUT,
                              layer=layer)
    return cams[layer]


def explain(loaded: ServedVersion, screened: Screened, class_name: str | None = None,
            layer: ExplainLayer = "auto") -> Prediction:
    """The answer for one screened image with its Grad-CAM map on ``layer`` (see
    ``choose_layer``), from one TensorFlow pass of the version's own Keras model (whatever
    runtime serves its plain predictions), drawn on the image as screening prepared it."""
    if class_name is not None and class_name not in loaded.classes:
        raise UnknownClass(f"{class_name!r} is not a class of version {loaded.version}; "
                           f"its classes are {loaded.classes}")
    if layer != "auto" and layer not in CAM_LAYERS:  # callers other than the API's
        raise ExplanationUnavailable(f"no heat map on {layer!r}; the layers are "
                                     f"{', '.join(('auto', *CAM_LAYERS))}")
    chosen = choose_layer(layer, loaded.image_size)
    pixels = screened.pixels
    index = None if class_name is None else loaded.classes.index(class_name)
    with loaded.lock:  # one pass at a time per version, batched predictions included
        activation = _cam(loaded, chosen)(pixels, index)
    inputs = None if screened.inputs is None else screened.inputs[None]
    answer = loaded.answer(loaded.calibrated(activation.probabilities[None],
                                             activation.features, pixels[None], inputs), 0)
    image_png, overlay_png = render(screened.prepared, activation.heatmap)
    return answer.model_copy(update={"precision": "float32", "explanation": Explanation(
        layer=chosen, class_name=loaded.classes[activation.index], image_png=image_png,
        overlay_png=overlay_png, grid_shape=list(activation.heatmap.shape),
        grid=np.round(activation.heatmap, 4).tolist())})


class GradCamPasses:
    """Each image answered with its heat map at once, in the thread that submits it: one
    gradient pass at a time (together they would only fight for cores)."""

    def __init__(self, class_name: str | None = None, layer: ExplainLayer = "auto") -> None:
        self.class_name = class_name
        self.layer: ExplainLayer = layer

    def submit(self, model: ServedVersion, screened: Screened) -> Future[Prediction]:
        future: Future[Prediction] = Future()
        try:
            future.set_result(explain(model, screened, self.class_name, self.layer))
        except Exception as exc:  # the image's own failure, as a pass's would be
            future.set_exception(exc)
        return future

    def flush(self) -> None:
        """Nothing waits: each image was answered as it came."""
