"""The VGG16 transfer-learning classifier: base weights, a pure builder, training phases.

Keras is imported inside functions so that processes which never build a model (the Celery
parent process, the CLI's help) do not pay for TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.checksums import sha256_file
from shared.config import BaseWeights, Settings
from shared.errors import WeightsUnavailable

if TYPE_CHECKING:
    import keras

# Keras' own no-top VGG16 file, cache location and checksum (keras/src/applications/vgg16.py).
IMAGENET_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_ORIGIN = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + IMAGENET_FILENAME
)
IMAGENET_MD5 = "6d6bbae143d832006294945121d1f1fc"
# The layers build_model makes, by the names other modules reach them by: Keras' VGG16
# names its blocks blockN_convM and blockN_pool; the head is ours.
BLOCK_POOLS = tuple(f"block{n}_pool" for n in range(1, 6))
CAM_LAYER = "block5_conv3"  # the last convolution, which Grad-CAM maps
FINE_TUNE_PREFIX = "block5_"
# What a fine-tune on a site's few films trains beside the head.
SITE_PREFIXES: tuple[str, ...] = ("block",)
POOL_LAYER = "avg_pool"
DROPOUT_LAYER = "head_dropout"
OUTPUT_LAYER = "predictions"
ALTERNATIVES = (
    "offline, set base_weights to 'none' (a random start; `--base-weights none` on the command "
    "line), or to 'file' with CXR_BASE_WEIGHTS_FILE pointing to a local VGG16 no-top weights "
    "file (and CXR_BASE_WEIGHTS_SHA256)"
)


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int
    image_size: int
    dropout: float = 0.5
    weights_path: Path | None = None


def resolve_base_weights(choice: BaseWeights, settings: Settings) -> Path | None:
    """Find the base weights before any training starts; fail fast with the alternatives."""
    if choice == "none":
        return None
    if choice == "file":
        return _local_weights(settings)
    from keras.utils import get_file

    try:
        return Path(
            get_file(IMAGENET_FILENAME, IMAGENET_ORIGIN, cache_subdir="models",
                     file_hash=IMAGENET_MD5)
        )
    except Exception as exc:  # get_file raises bare Exception for network and hash failures
        raise WeightsUnavailable(
            f"ImageNet weights for VGG16 could not be had from Keras' cache or {IMAGENET_ORIGIN}"
            f" ({exc}); {ALTERNATIVES}"
        ) from exc


def _local_weights(settings: Settings) -> Path:
    path = settings.base_weights_file
    if path is None or not path.is_file():
        raise WeightsUnavailable(f"CXR_BASE_WEIGHTS_FILE is not set or missing; {ALTERNATIVES}")
    if settings.base_weights_sha256:
        actual = sha256_file(path)
        if actual != settings.base_weights_sha256.lower():
            raise WeightsUnavailable(
                f"{path.name} has sha256 {actual}, expected {settings.base_weights_sha256}"
            )
    return path


def build_model(config: ModelConfig) -> keras.Model:
    """VGG16 (no top) with a softmax head, built on the base's own input graph."""
    import keras

    base = keras.applications.VGG16(
        include_top=False,
        weights=str(config.weights_path) if config.weights_path else None,
        input_shape=(config.image_size, config.image_size, 3),
    )
    x = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(base.output)
    x = keras.layers.Dropout(config.dropout, name=DROPOUT_LAYER)(x)
    # float32 softmax even under a mixed-precision policy, for stable probabilities
    outputs = keras.layers.Dense(config.num_classes, activation="softmax", dtype="float32",
                                 name=OUTPUT_LAYER)(x)
    model = keras.Model(base.input, outputs, name="cxr_vgg16")
    set_phase(model, "head")
    return model


def set_phase(model: keras.Model, phase: str) -> None:
    """'head': base frozen; 'fine_tune': block5 trainable too; 'full': everything (a random
    base); 'site': a fine-tune of a version on a site's films, SITE_PREFIXES and the head.
    Recompile afterwards."""
    if phase not in ("head", "fine_tune", "full", "site"):
        raise ValueError(f"unknown phase {phase!r}")
    trained = {"head": (), "fine_tune": (FINE_TUNE_PREFIX,), "site": SITE_PREFIXES,
               "full": ("block",)}[phase]
    for layer in model.layers:
        if layer.name.startswith("block"):
            layer.trainable = layer.name.startswith(trained)


def save_for_serving(model: keras.Model, path: Path) -> None:
    """Save the model without its optimizer: the optimizer's state is two more copies of every
    trained weight (Adam's moments), which nothing that loads a version reads."""
    import keras

    copy = keras.Model.from_config(model.get_config())  # clone_model would compile it
    copy.set_weights(model.get_weights())
    copy.save(path)


def load_model(path: Path) -> keras.Model:
    """Load a published model for inference."""
    import keras

    return keras.saving.load_model(path, compile=False)
