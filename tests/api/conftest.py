"""Random-weight model versions published into a registry: timing and plumbing, not accuracy."""

from __future__ import annotations

from shared.modeling import ModelConfig, build_model
from shared.registry import MODEL_FILE, Registry


def publish_random(registry: Registry, seed: int, size: int = 32) -> str:
    import keras

    keras.utils.set_random_seed(seed)
    staging = registry.new_staging()
    build_model(ModelConfig(num_classes=3, image_size=size)).save(staging / MODEL_FILE)
    manifest = {"created_at": "2026-01-01T00:00:00+00:00", "classes": ["a", "b", "c"],
                "image_size": size, "dataset": {"name": "t"}, "parent": None}
    return registry.publish(staging, manifest, activate=False)
