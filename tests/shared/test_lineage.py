"""A fine-tune's parent resolved when it is asked for: its id, its classes, what the child
inherits, and the requests refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ClassMismatch, ConflictingParameters, ModelNotFound
from shared.lineage import resolve_parent
from shared.registry.local import LocalRegistry
from shared.training_params import FINE_TUNE_DEFAULTS, TrainingParams
from tests.helpers.versions import publish_random

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
OPTIONS = {"equalize": "clahe", "crop_border": 0.05, "clahe_clip_limit": 0.02,
           "reduce_large": True}


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    registry = LocalRegistry(tmp_path / "models")
    publish_random(registry, 1, size=48, classes=tuple(CLASSES), activate=True,
                   extra={"preprocessing_options": OPTIONS})
    return registry


def test_active_is_named_by_id_and_the_size_and_preprocessing_are_inherited(
        registry: LocalRegistry) -> None:
    active = registry.active()
    assert active is not None
    params, parent = resolve_parent(TrainingParams(dataset="site", base_version="active"),
                                    registry, ["COVID", "NORMAL", "VIRAL_PNEUMONIA"], "site")
    assert parent is not None and parent.version == active.version
    assert params.base_version == active.version
    assert (params.image_size, params.equalize, params.crop_border,
            params.clahe_clip_limit) == (48, "clahe", 0.05, 0.02)
    # a fine-tune's own defaults, where the request left a field out
    assert {name: getattr(params, name) for name in FINE_TUNE_DEFAULTS} == FINE_TUNE_DEFAULTS
    # resolved again (as the worker does with a queued request), nothing changes
    again, _ = resolve_parent(TrainingParams.model_validate_json(params.model_dump_json()),
                              registry, CLASSES, "site")
    assert again == params
    # and without base_version, the request is left alone
    plain = TrainingParams(dataset="site")
    assert resolve_parent(plain, registry, CLASSES, "site") == (plain, None)


def test_a_different_size_or_preprocessing_is_refused_naming_both(
        registry: LocalRegistry) -> None:
    asked = TrainingParams(dataset="site", base_version="active", image_size=64,
                           equalize="clahe")
    with pytest.raises(ConflictingParameters, match=r"image_size 64 \(the version's is 48\)"):
        resolve_parent(asked, registry, CLASSES, "site")
    same = TrainingParams(dataset="site", base_version="active", image_size=48)
    assert resolve_parent(same, registry, CLASSES, "site")[0].image_size == 48


@pytest.mark.parametrize(("classes", "words"), [
    (["COVID", "Normal", "Tuberculosis"], "lacks ['Viral Pneumonia']"),
    (["COVID"], "one class teach the site's look, not the disease"),
    (["COVID", "Normal", "Viral Pneumonia", "Lung_Opacity"], "'Lung_Opacity'"),
])
def test_other_classes_are_refused_naming_both_sets(
        registry: LocalRegistry, classes: list[str], words: str) -> None:
    with pytest.raises(ClassMismatch) as refused:
        resolve_parent(TrainingParams(dataset="site", base_version="active"), registry,
                       classes, "site")
    assert words in refused.value.message and str(CLASSES) in refused.value.message
    assert refused.value.code == "class_mismatch"


def test_an_unknown_or_missing_parent_is_refused(tmp_path: Path,
                                                 registry: LocalRegistry) -> None:
    with pytest.raises(ModelNotFound):
        resolve_parent(TrainingParams(dataset="site", base_version="20200101-000000-abcdef"),
                       registry, CLASSES, "site")
    with pytest.raises(ModelNotFound, match="no version is active"):
        resolve_parent(TrainingParams(dataset="site", base_version="active"),
                       LocalRegistry(tmp_path / "empty"), CLASSES, "site")


def test_a_fine_tune_request_refuses_what_does_not_apply() -> None:
    with pytest.raises(ValueError, match="base_weights does not apply"):
        TrainingParams(dataset="site", base_version="active", base_weights="imagenet")
    with pytest.raises(ValueError, match="replay_fraction needs base_version"):
        TrainingParams(dataset="site", replay_fraction=0.3)
    assert TrainingParams(dataset="site", base_version="v1", epochs=3).epochs == 3
