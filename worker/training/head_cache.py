"""Phase one on cached features: the frozen base runs once per view, not once per epoch.

With the base frozen, a training step is still mostly a forward pass through VGG16
(bench/results/findings.md), for features that only change through augmentation. Computing
them for ``views`` copies of the training split (the first un-augmented, the rest augmented
as in training) and training the head on those makes each further epoch nearly free.
Fine-tuning still runs live.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.ml.modeling import DROPOUT_LAYER, OUTPUT_LAYER, POOL_LAYER

HEAD_INPUT = POOL_LAYER
# The layers phase one trains on cached features (explain.py's CAM_HEAD_LAYERS are others).
CACHED_HEAD_LAYERS = (DROPOUT_LAYER, OUTPUT_LAYER)


def _features(extractor: Any, batches: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in batches:
        xs.append(np.asarray(extractor(x, training=False)))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)


def cached_features(model: Any, train_views: list[Any], val: Any) -> tuple[Any, Any]:
    """(features, label) arrays of every training view, and of the validation split."""
    import keras

    extractor = keras.Model(model.input, model.get_layer(HEAD_INPUT).output)
    parts = [_features(extractor, view) for view in train_views]
    train = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
    return train, _features(extractor, val)


def head_model(model: Any) -> Any:
    """The classifier's own head layers (shared weights) on a feature input."""
    import keras

    features = keras.Input(model.get_layer(HEAD_INPUT).output.shape[1:])
    x = features
    for name in CACHED_HEAD_LAYERS:
        x = model.get_layer(name)(x)
    return keras.Model(features, x, name="cached_head")


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
