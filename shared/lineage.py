"""A fine-tune's parent: ``base_version`` resolved to one published version, and what the
child inherits from it. Resolved once, when the job is queued (or, without a queue, when it
starts), so that the job trains from the version that was active then."""

from __future__ import annotations

from shared.datasets import same_classes
from shared.errors import ClassMismatch, ConflictingParameters, ModelNotFound
from shared.manifest import WRITTEN_AT_TOP, Manifest
from shared.registry import Registry
from shared.training_params import TrainingParams


def named_version(registry: Registry, base_version: str) -> str:
    """A version id for ``base_version``: the active version for "active"."""
    if base_version != "active":
        return base_version
    active = registry.active()
    if active is None:
        raise ModelNotFound("base_version 'active': no version is active yet; name one")
    return active.version


def inherited(manifest: Manifest) -> dict[str, object]:
    """What a child takes from its parent: the image size and the preprocessing."""
    options = manifest.preprocessing_options or {}
    return {"image_size": manifest.image_size,
            **{key: options[key] for key in WRITTEN_AT_TOP if key in options}}


def resolve_parent(params: TrainingParams, registry: Registry, classes: list[str],
                   dataset_name: str) -> tuple[TrainingParams, Manifest | None]:
    """The request with ``base_version`` named by id and the parent's image size and
    preprocessing in it, and the parent's manifest; the request as it is without
    ``base_version``. Refused (ClassMismatch) unless ``classes``, the datasets' own, are the
    parent's, and (ConflictingParameters) when the request names another image size or
    preprocessing than the parent's."""
    if params.base_version is None:
        return params, None
    version = named_version(registry, params.base_version)
    manifest = registry.manifest(version)
    same_classes(classes, list(manifest.classes), dataset_name)
    values = inherited(manifest)
    conflicts = [f"{name} {getattr(params, name)!r} (the version's is {value!r})"
                 for name, value in values.items()
                 if name in params.model_fields_set and getattr(params, name) != value]
    if conflicts:
        raise ConflictingParameters(
            f"a fine-tune of {version} keeps its image size and preprocessing; the request "
            f"names {', '.join(conflicts)}: leave them out")
    return params.model_copy(update={"base_version": version, **values}), manifest


def comparable_classes(other: Manifest, classes: list[str]) -> None:
    """Two versions are compared on the same images only if they answer the same classes,
    in the same order."""
    if list(other.classes) != list(classes):
        raise ClassMismatch(f"version {other.version} answers {list(other.classes)}, not "
                            f"{classes}: the two cannot be compared image by image")
