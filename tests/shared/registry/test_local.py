"""The model registry: sealed versions, the active pointer, rollback and crash safety."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.errors import InUse, ModelNotFound, RegistryError, is_out_of_space
from shared.manifest import Manifest
from shared.registry import ActivePointer, Registry
from shared.registry import base as registry_module
from shared.registry import local as local_module
from shared.registry.base import (
    ACTIVE_FILE,
    EVALUATIONS_DIR,
    SHADOW_FILE,
    STAGING_DIR,
    VERSION_PATTERN,
    new_version_id,
)
from shared.registry.files import MANIFEST_FILE, MODEL_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.services import SmallDisk
from tests.helpers.versions import draft, external_report, version_dirs

MANIFEST = draft(classes=("COVID", "Normal"), history={"loss": [0.9, 0.5]})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return LocalRegistry(tmp_path / "models")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Version ids one second apart, so that publish order is id order."""
    start = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    ticks = iter(range(10_000))
    real = registry_module.new_version_id
    monkeypatch.setattr(registry_module, "new_version_id",
                        lambda now=None: real(start + timedelta(seconds=next(ticks))))
    yield


def _stage(registry: Registry, content: bytes = b"fake keras model", curves: bool = True) -> Path:
    staging = registry.new_staging()
    (staging / MODEL_FILE).write_bytes(content)
    if curves:
        (staging / "curves.png").write_bytes(b"\x89PNG fake curves " + content)
    return staging


def _publish(registry: Registry, content: bytes, **kwargs: Any) -> str:
    return registry.publish(_stage(registry, content), MANIFEST, **kwargs)


def _staging_leftovers(registry: Registry) -> list[Path]:
    base = registry.root / STAGING_DIR
    staged = list(base.iterdir()) if base.is_dir() else []
    return staged + list(registry.root.glob(f".{ACTIVE_FILE}.*"))


# -- version ids ---------------------------------------------------------------------------
def test_new_version_ids_sort_by_time() -> None:
    moments = [datetime(2024, 12, 31, 23, 59, 58, tzinfo=UTC) + timedelta(seconds=s)
               for s in (0, 1, 2, 61, 3600, 86_400 * 40, 86_400 * 400)]
    ids = [new_version_id(moment) for moment in moments]
    assert sorted(ids) == ids
    assert all(VERSION_PATTERN.match(i) for i in ids)
    assert ids[0].startswith("20241231-235958-")
    assert ids[2].startswith("20250101-000000-")
    assert VERSION_PATTERN.match(new_version_id())
    assert len({new_version_id(moments[0]) for _ in range(50)}) == 50  # random suffix


# -- publishing ----------------------------------------------------------------------------
def test_publish_seals_the_version_and_activates_it(registry: Registry) -> None:
    staging = _stage(registry, b"model bytes v1")
    version = registry.publish(staging, MANIFEST)
    assert VERSION_PATTERN.match(version)
    folder = registry.root / version
    assert folder.is_dir()
    assert not staging.exists()
    assert (folder / MODEL_FILE).read_bytes() == b"model bytes v1"
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["version"] == version
    assert manifest["model_sha256"] == hashlib.sha256(b"model bytes v1").hexdigest()
    assert manifest["files"] == {"curves.png": _sha(folder / "curves.png"),
                                 MODEL_FILE: _sha(folder / MODEL_FILE)}
    assert manifest["classes"] == ["COVID", "Normal"] and manifest["history"]["loss"] == [0.9, 0.5]
    assert registry.manifest(version) == Manifest.model_validate(manifest)
    assert registry.active() == ActivePointer(version, 1)
    assert json.loads((registry.root / ACTIVE_FILE).read_text())["version"] == version
    assert registry.verified_model_path(version) == folder / MODEL_FILE


def test_publish_without_activation_leaves_the_pointer(registry: Registry) -> None:
    first = _publish(registry, b"one")
    second = _publish(registry, b"two", activate=False)
    assert registry.active() == ActivePointer(first, 1)
    assert (registry.root / second / MODEL_FILE).read_bytes() == b"two"


def test_publish_needs_a_model_file(registry: Registry) -> None:
    staging = registry.new_staging()
    (staging / "curves.png").write_bytes(b"x")
    with pytest.raises(RegistryError):
        registry.publish(staging, MANIFEST)
    assert version_dirs(registry) == []
    assert registry.active() is None


def test_publish_takes_the_id_its_caller_minted(registry: Registry) -> None:
    minted = new_version_id()
    assert _publish(registry, b"named", version=minted) == minted
    assert registry.manifest(minted).version == minted
    with pytest.raises(RegistryError, match="not a version id"):
        _publish(registry, b"misnamed", version="../elsewhere")
    assert [p.name for p in version_dirs(registry)] == [minted]


def test_caller_cannot_override_sealed_fields(registry: Registry) -> None:
    staging = _stage(registry, b"real")
    forged = MANIFEST.model_copy(update={"version": "evil", "model_sha256": "0" * 64,
                                         "files": {}})
    version = registry.publish(staging, forged)
    manifest = registry.manifest(version)
    assert manifest.version == version
    assert manifest.model_sha256 == hashlib.sha256(b"real").hexdigest()
    assert MODEL_FILE in manifest.files


# -- the active pointer --------------------------------------------------------------------
def test_activation_increments_the_generation_and_rolls_back(registry: Registry,
                                                             clock: None) -> None:
    assert registry.active() is None
    v1 = _publish(registry, b"v1")
    assert registry.active() == ActivePointer(v1, 1)
    v2 = _publish(registry, b"v2")
    assert registry.active() == ActivePointer(v2, 2)
    assert registry.activate(v1) == ActivePointer(v1, 3)  # roll back
    assert registry.active() == ActivePointer(v1, 3)
    assert registry.activate(v1) == ActivePointer(v1, 4)  # re-pinning is still a change
    assert registry.activate(v2) == ActivePointer(v2, 5)
    assert registry.verified_model_path(registry.active().version).read_bytes() == b"v2"


@pytest.mark.parametrize("version", ["20990101-000000-abcdef", "20250101-000000-000000"])
def test_activating_an_unknown_version_fails(registry: Registry, version: str) -> None:
    current = _publish(registry, b"v1")
    with pytest.raises(ModelNotFound):
        registry.activate(version)
    assert registry.active() == ActivePointer(current, 1)


@pytest.mark.parametrize(
    "version", ["latest", "", "../models", "20250101-000000-ABCDEF", "20250101-000000-abcdef/..",
                "/etc", "20250101-000000-abcdefg", ".staging"],
)
def test_invalid_version_strings_are_not_found(registry: Registry, version: str) -> None:
    _publish(registry, b"v1")
    for call in (registry.activate, registry.manifest, registry.verified_model_path,
                 registry.model_path, registry.version_dir):
        with pytest.raises(ModelNotFound):
            call(version)
    assert registry.active() is not None and registry.active().generation == 1


def test_a_version_folder_without_a_manifest_is_not_activatable(registry: Registry) -> None:
    broken = registry.root / "20250101-000000-abcdef"
    broken.mkdir(parents=True)
    (broken / MODEL_FILE).write_bytes(b"x")
    with pytest.raises(ModelNotFound):
        registry.activate(broken.name)
    assert registry.active() is None
    assert registry.versions() == []


def test_unreadable_active_pointer_is_a_registry_error(registry: Registry) -> None:
    _publish(registry, b"v1")
    (registry.root / ACTIVE_FILE).write_text("{not json")
    with pytest.raises(RegistryError):
        registry.active()


def test_verified_model_path_detects_corruption(registry: Registry) -> None:
    version = _publish(registry, b"pristine model")
    path = registry.verified_model_path(version)
    path.write_bytes(b"pristine modeL")  # same size, one byte differs
    with pytest.raises(RegistryError):
        registry.verified_model_path(version)
    path.unlink()
    with pytest.raises(RegistryError):
        registry.verified_model_path(version)


def test_versions_are_listed_newest_first(registry: Registry, clock: None) -> None:
    assert LocalRegistry(registry.root / "absent").versions() == []
    published = [_publish(registry, f"model {i}".encode()) for i in range(4)]
    (registry.root / "not-a-version").mkdir()
    listed = registry.versions()
    assert [m.version for m in listed] == published[::-1]
    assert all(m.dataset.name == "t" and m.classes == ["COVID", "Normal"] for m in listed)


def test_versions_skip_folders_with_a_broken_manifest(registry: Registry, clock: None) -> None:
    good = _publish(registry, b"good")
    bad = _publish(registry, b"bad")
    (registry.root / bad / MANIFEST_FILE).write_text("{")
    assert [m.version for m in registry.versions()] == [good]


# -- staging cleanup -----------------------------------------------------------------------
def test_clean_staging_only_removes_old_leftovers(registry: Registry) -> None:
    assert registry.clean_staging() == 0  # no root yet
    old = _stage(registry, b"old")
    fresh = _stage(registry, b"fresh")
    stale_pointer = registry.root / f".{ACTIVE_FILE}.deadbeef"
    stale_pointer.write_text("{}")
    hour_ago = os.stat(old).st_mtime - 3600 * 7
    os.utime(old, (hour_ago, hour_ago))
    os.utime(stale_pointer, (hour_ago, hour_ago))
    assert registry.clean_staging() == 1
    assert not old.exists() and fresh.exists()
    assert not stale_pointer.exists()
    version = _publish(registry, b"published")
    assert registry.clean_staging(older_than_s=0) == 1
    assert not fresh.exists()
    assert registry.verified_model_path(version).read_bytes() == b"published"


# -- crash safety --------------------------------------------------------------------------
class Crash(Exception):
    """A simulated power cut at one step of a publish."""


def _crash_at(n: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the n-th durable-filesystem step of the registry fail; returns the steps run."""
    steps: list[str] = []

    def wrap(name: str, real: Callable[..., Any], partial: bool = False) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            steps.append(name)
            if len(steps) == n:
                if partial:  # a torn write: half the bytes reach the file
                    path, data = args
                    Path(path).write_bytes(data[: len(data) // 2])
                raise Crash(f"crash at step {n} ({name})")
            return real(*args, **kwargs)
        return step

    monkeypatch.setattr(local_module.os, "rename", wrap("rename", os.rename))
    monkeypatch.setattr(local_module.os, "replace", wrap("replace", os.replace))
    monkeypatch.setattr(local_module, "_fsync_path", wrap("fsync", local_module._fsync_path))
    monkeypatch.setattr(local_module, "_write_durably",
                        wrap("write", local_module._write_durably, partial=True))
    return steps


def _assert_consistent(registry: Registry, old: ActivePointer, known: set[str]) -> set[str]:
    """Every version is complete, ACTIVE is the old one or a new complete one."""
    present = {p.name for p in version_dirs(registry)}
    for name in present:
        folder = registry.root / name
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        assert manifest["version"] == name
        assert _sha(folder / MODEL_FILE) == manifest["model_sha256"]
        for file_name, digest in manifest["files"].items():
            assert _sha(folder / file_name) == digest
        assert registry.verified_model_path(name) == folder / MODEL_FILE
    assert known <= present
    active = registry.active()
    assert active is not None
    if active.version == old.version:
        assert active.generation == old.generation
    else:
        assert active.version in present - known
        assert active.generation == old.generation + 1
    assert {m.version for m in registry.versions()} == present
    return present


def test_a_publish_interrupted_at_any_step_leaves_a_consistent_registry(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(registry, b"the original model")
    known = {p.name for p in version_dirs(registry)}
    crashed_at: list[str] = []
    for n in range(1, 50):
        old = registry.active()
        assert old is not None
        with monkeypatch.context() as patch:
            steps = _crash_at(n, patch)
            content = f"model attempt {n}".encode()
            try:
                version = _publish(registry, content)
            except Crash:
                crashed_at.append(steps[-1])
            else:
                assert len(steps) < n  # every step ran without hitting the crash
                assert registry.active() == ActivePointer(version, old.generation + 1)
                assert registry.verified_model_path(version).read_bytes() == content
                break
        after = _assert_consistent(registry, old, known)
        assert len(after - known) <= 1  # at most the one interrupted version
        registry.clean_staging(older_than_s=0)
        assert _staging_leftovers(registry) == []
        assert _assert_consistent(registry, old, known) == after
        known = after
    else:  # pragma: no cover
        pytest.fail("publish never completed")
    # Each kind of step was interrupted at least once.
    assert {"write", "fsync", "rename", "replace"} <= set(crashed_at)
    assert len(crashed_at) >= 6
    registry.clean_staging(older_than_s=0)
    assert _staging_leftovers(registry) == []


def test_an_interrupted_activation_can_be_retried(registry: Registry,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = _publish(registry, b"v1")
    v2 = _publish(registry, b"v2", activate=False)
    with monkeypatch.context() as patch:
        _crash_at(2, patch)  # write the temp pointer, then die at os.replace
        with pytest.raises(Crash):
            registry.activate(v2)
    assert registry.active() == ActivePointer(v1, 1)
    assert registry.activate(v2) == ActivePointer(v2, 2)
    registry.clean_staging(older_than_s=0)
    assert _staging_leftovers(registry) == []


def _fill(disk: SmallDisk) -> None:
    """Leave the disk with no free block at all."""
    with pytest.raises(OSError) as caught, (disk.path / "filler").open("wb") as handle:
        while True:
            handle.write(b"\0" * 4096)
            handle.flush()
    assert is_out_of_space(caught.value)


def test_a_publish_that_hits_a_full_disk_changes_nothing(small_disk: SmallDisk) -> None:
    registry = LocalRegistry(small_disk.path / "models")
    first = _publish(registry, b"first model")
    before = version_dirs(registry)
    staging = _stage(registry, b"second model")
    small_disk.resize(small_disk.used() + 64 * 1024)
    _fill(small_disk)
    with pytest.raises(OSError) as caught:
        registry.publish(staging, MANIFEST)  # its manifest cannot be written
    assert is_out_of_space(caught.value)
    registry.discard(staging)
    assert version_dirs(registry) == before
    assert _staging_leftovers(registry) == []
    assert registry.active() == ActivePointer(first, 1)


def test_an_activation_that_hits_a_full_disk_keeps_the_old_pointer(
        small_disk: SmallDisk) -> None:
    registry = LocalRegistry(small_disk.path / "models")
    first, second = _publish(registry, b"first"), _publish(registry, b"second", activate=False)
    filler = small_disk.path / "filler"
    small_disk.resize(small_disk.used() + 64 * 1024)
    _fill(small_disk)
    with pytest.raises(OSError) as refused:
        registry.activate(second)
    assert is_out_of_space(refused.value)
    assert registry.active() == ActivePointer(first, 1)
    assert [p.name for p in registry.root.iterdir() if p.name.startswith(".ACTIVE")] == []
    filler.unlink()
    assert registry.activate(second) == ActivePointer(second, 2)


# -- the shadow ----------------------------------------------------------------------------
def test_the_shadow_is_set_replaced_and_ended(registry: Registry, clock: None) -> None:
    assert registry.shadow() is None
    registry.end_shadow()  # none to end: nothing happens
    active = _publish(registry, b"active")
    first = _publish(registry, b"first candidate", activate=False)
    second = _publish(registry, b"second candidate", activate=False)
    assert registry.set_shadow(first) == ActivePointer(first, 1)
    assert registry.shadow() == ActivePointer(first, 1)
    assert registry.set_shadow(second) == ActivePointer(second, 2)  # one at a time
    assert registry.set_shadow(second) == ActivePointer(second, 3)  # every change is seen
    assert json.loads((registry.root / SHADOW_FILE).read_text())["version"] == second
    assert registry.active() == ActivePointer(active, 1)
    registry.end_shadow()
    assert registry.shadow() is None
    assert not (registry.root / SHADOW_FILE).exists()
    assert registry.active() == ActivePointer(active, 1)


def test_only_a_published_version_can_be_the_shadow(registry: Registry) -> None:
    current = _publish(registry, b"v1")
    for version in (new_version_id(), "latest", "../ACTIVE"):
        with pytest.raises(ModelNotFound):
            registry.set_shadow(version)
    assert registry.shadow() is None
    registry.set_shadow(current)
    (registry.root / SHADOW_FILE).write_text("{not json")
    with pytest.raises(RegistryError, match="shadow pointer"):
        registry.shadow()


# -- deleting ------------------------------------------------------------------------------
def test_delete_removes_the_version_and_its_evaluations(registry: Registry, clock: None) -> None:
    kept = _publish(registry, b"active")
    doomed = _publish(registry, b"candidate", activate=False)
    registry.save_evaluation(doomed, external_report(doomed))
    registry.save_evaluation(kept, external_report(kept))
    registry.delete(doomed)
    assert [m.version for m in registry.versions()] == [kept]
    assert not (registry.root / doomed).exists()
    assert not (registry.root / EVALUATIONS_DIR / doomed).exists()
    assert registry.evaluations(doomed) == []
    assert registry.evaluations(kept) == [external_report(kept)]
    assert list((registry.root / STAGING_DIR).iterdir()) == []  # nothing left to sweep
    for call in (registry.manifest, registry.activate, registry.set_shadow, registry.delete):
        with pytest.raises(ModelNotFound):
            call(doomed)
    assert registry.active() == ActivePointer(kept, 1)
    assert registry.verified_model_path(kept).read_bytes() == b"active"


@pytest.mark.parametrize("version", ["20990101-000000-abcdef", "latest", "../models"])
def test_deleting_an_unknown_version_is_not_found(registry: Registry, version: str) -> None:
    _publish(registry, b"v1")
    with pytest.raises(ModelNotFound):
        registry.delete(version)
    assert len(registry.versions()) == 1


def test_the_active_version_and_the_shadow_cannot_be_deleted(registry: Registry) -> None:
    active = _publish(registry, b"active")
    shadow = _publish(registry, b"shadow", activate=False)
    registry.set_shadow(shadow)
    for version, name in ((active, "active version"), (shadow, "shadow")):
        with pytest.raises(InUse, match=name):
            registry.delete(version)
        assert registry.manifest(version).version == version
    registry.end_shadow()
    registry.delete(shadow)
    assert [m.version for m in registry.versions()] == [active]


def test_a_delete_interrupted_at_any_step_leaves_the_version_whole_or_gone(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    active = _publish(registry, b"active")
    crashed_at: list[str] = []
    for n in range(1, 10):
        doomed = _publish(registry, f"candidate {n}".encode(), activate=False)
        registry.save_evaluation(doomed, external_report(doomed))
        with monkeypatch.context() as patch:
            steps = _crash_at(n, patch)
            try:
                registry.delete(doomed)
            except Crash:
                crashed_at.append(steps[-1])
            else:
                assert len(steps) < n
                break
        listed = {m.version for m in registry.versions()}
        if doomed in listed:  # crashed before the rename: untouched
            assert registry.verified_model_path(doomed).read_bytes() == f"candidate {n}".encode()
            assert registry.evaluations(doomed) == [external_report(doomed)]
            registry.delete(doomed)
        # What the crash left is swept, whenever it happened.
        registry.clean_staging(older_than_s=0)
        assert _staging_leftovers(registry) == []
        assert not (registry.root / EVALUATIONS_DIR / doomed).exists()
        assert not (registry.root / doomed).exists()
    else:  # pragma: no cover
        pytest.fail("delete never completed")
    assert crashed_at == ["rename", "fsync", "rename"]  # before, between and after unpublishing
    assert [m.version for m in registry.versions()] == [active]
