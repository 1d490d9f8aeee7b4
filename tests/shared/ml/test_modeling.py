"""The model builder, training phases and the three ways to get base weights."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from shared.checksums import sha256_file
from shared.config import Settings
from shared.errors import WeightsUnavailable
from shared.ml import modeling
from shared.ml.modeling import (
    CAM_LAYER,
    ModelConfig,
    build_model,
    load_model,
    resolve_base_weights,
    save_for_serving,
    set_phase,
)


def _trainable(model) -> set[str]:  # type: ignore[no-untyped-def]
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


def test_builder_makes_a_softmax_classifier_with_a_reachable_cam_layer() -> None:
    model = build_model(ModelConfig(num_classes=3, image_size=32))
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 3)
    assert model.get_layer(CAM_LAYER).output.shape[-1] == 512
    out = np.asarray(model(np.zeros((2, 32, 32, 3), np.float32)))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_phases_freeze_the_base_then_open_block5_only() -> None:
    model = build_model(ModelConfig(num_classes=2, image_size=32))
    assert _trainable(model) == {"predictions"}
    set_phase(model, "fine_tune")
    assert _trainable(model) == {"predictions", "block5_conv1", "block5_conv2", "block5_conv3"}
    set_phase(model, "head")
    assert _trainable(model) == {"predictions"}
    set_phase(model, "full")
    assert len(_trainable(model)) == 14  # 13 convolutions and the head
    with pytest.raises(ValueError):
        set_phase(model, "everything")


def _weights_file(tmp_path: Path) -> Path:
    import keras

    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(path)
    return path


def test_a_local_weights_file_is_really_loaded(tmp_path: Path) -> None:
    import keras

    path = _weights_file(tmp_path)
    settings = Settings(base_weights_file=path, base_weights_sha256=sha256_file(path),
                        models_dir=tmp_path)
    resolved = resolve_base_weights("file", settings)
    model = build_model(ModelConfig(num_classes=3, image_size=32, weights_path=resolved))
    reference = keras.applications.VGG16(include_top=False, weights=None,
                                         input_shape=(32, 32, 3))
    reference.load_weights(path)
    for name in ("block1_conv1", "block5_conv3"):
        for got, want in zip(model.get_layer(name).get_weights(),
                             reference.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    # and a freshly initialised base differs, so the equality above means something
    fresh = build_model(ModelConfig(num_classes=3, image_size=32))
    assert not np.array_equal(fresh.get_layer("block1_conv1").get_weights()[0],
                              model.get_layer("block1_conv1").get_weights()[0])


def test_a_weights_file_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    path = _weights_file(tmp_path)
    settings = Settings(base_weights_file=path, base_weights_sha256="0" * 64)
    with pytest.raises(WeightsUnavailable, match="sha256"):
        resolve_base_weights("file", settings)


def test_file_weights_without_a_configured_file_name_the_alternatives() -> None:
    with pytest.raises(WeightsUnavailable, match="none"):
        resolve_base_weights("file", Settings())


def test_unreachable_imagenet_weights_fail_fast_with_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty Keras cache and an origin nobody listens on: what a machine offline sees.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(modeling, "IMAGENET_ORIGIN", "http://127.0.0.1:9/vgg16_notop.h5")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as info:
        resolve_base_weights("imagenet", Settings())
    assert time.monotonic() - start < 30
    assert "'none'" in info.value.message and "CXR_BASE_WEIGHTS_FILE" in info.value.message


def test_no_weights_needs_nothing() -> None:
    assert resolve_base_weights("none", Settings()) is None


def test_a_version_is_saved_without_its_optimizer_and_answers_the_same(tmp_path: Path) -> None:
    import zipfile

    import h5py
    import keras

    model = build_model(ModelConfig(num_classes=3, image_size=32))
    set_phase(model, "full")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(-100, 100, (4, 32, 32, 3)).astype(np.float32)
    model.fit(x, np.arange(4) % 3, epochs=1, verbose=0)  # Adam's two moments per weight
    model.save(tmp_path / "whole.keras")
    save_for_serving(model, tmp_path / "served.keras")

    def groups(path: Path) -> set[str]:
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as file, \
                h5py.File(file) as weights:
            return set(weights)

    assert "optimizer" in groups(tmp_path / "whole.keras")
    assert "optimizer" not in groups(tmp_path / "served.keras")
    whole, served = (tmp_path / "whole.keras").stat().st_size, \
        (tmp_path / "served.keras").stat().st_size
    assert served < whole / 2.5, (served, whole)
    np.testing.assert_allclose(load_model(tmp_path / "served.keras")(x, training=False),
                               model(x, training=False), atol=1e-6)
