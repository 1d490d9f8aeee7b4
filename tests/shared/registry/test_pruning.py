"""Pruning candidates: the oldest beyond the newest N go; the active version, the shadow,
their parents and what jobs use stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.manifest import Lineage, Manifest
from shared.registry.base import new_version_id
from shared.registry.files import MODEL_FILE
from shared.registry.local import LocalRegistry
from shared.registry.pruning import protected, prunable, prune_candidates
from tests.helpers.versions import draft

START = datetime(2026, 1, 1, tzinfo=UTC)


def _manifest(hour: int, **parts: Any) -> Manifest:
    version = new_version_id(START + timedelta(hours=hour))
    return draft(created_at=START + timedelta(hours=hour), **parts).seal(
        version, files={}, model_sha256="0" * 64)


def _publish(registry: LocalRegistry, hour: int, activate: bool = False, **parts: Any) -> str:
    staging = registry.new_staging()
    (staging / MODEL_FILE).write_bytes(f"model of hour {hour}".encode())
    return registry.publish(staging, draft(created_at=START + timedelta(hours=hour), **parts),
                            activate=activate)


def test_the_oldest_candidates_beyond_keep_are_prunable_oldest_first() -> None:
    versions = [_manifest(hour) for hour in range(6)]
    ids = [m.version for m in versions]
    shuffled = versions[3:] + versions[:3]  # order given does not matter
    assert prunable(shuffled, None, None, keep=2, in_use=set()) == ids[:4]
    assert prunable(shuffled, None, None, keep=0, in_use=set()) == ids
    assert prunable(shuffled, None, None, keep=6, in_use=set()) == []


def test_the_active_version_the_shadow_their_parents_and_used_ones_stay() -> None:
    grandparent = _manifest(0)
    parent = _manifest(1, parent=grandparent.version)  # the version active at its training
    tuned_from = _manifest(2)
    active = _manifest(3, parent=parent.version)
    shadow = _manifest(4, parent=active.version, lineage=Lineage(parent=tuned_from.version))
    used, spare, newest = _manifest(5), _manifest(6), _manifest(7)
    versions = [grandparent, parent, tuned_from, active, shadow, used, spare, newest]
    assert protected(versions, active.version, shadow.version) == {
        active.version, parent.version, shadow.version, tuned_from.version}
    # Only the parents: a grandparent is a candidate like any other.
    assert prunable(versions, active.version, shadow.version, keep=0,
                    in_use={used.version}) == [grandparent.version, spare.version,
                                               newest.version]
    assert prunable(versions, active.version, shadow.version, keep=1,
                    in_use={used.version}) == [grandparent.version, spare.version]
    assert prunable(versions, None, None, keep=0, in_use=set()) == [m.version for m in versions]


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "models")


def test_prune_candidates_deletes_what_prunable_names(registry: LocalRegistry) -> None:
    old = _publish(registry, 0)
    parent = _publish(registry, 1, activate=True)
    active = _publish(registry, 2, activate=True, parent=parent)
    candidates = [_publish(registry, hour) for hour in range(3, 7)]
    registry.set_shadow(candidates[0])
    deleted = prune_candidates(registry, keep=1, in_use={candidates[1]})
    assert deleted == [old, candidates[2]]
    assert [m.version for m in registry.versions()] == [
        candidates[3], candidates[1], candidates[0], active, parent]
    assert prune_candidates(registry, keep=1, in_use={candidates[1]}) == []
    # The version whose publish prunes counts, but stays even beyond ``keep``.
    assert prune_candidates(registry, keep=0, in_use=set(), published=candidates[3]) == [
        candidates[1]]
    assert [m.version for m in registry.versions()] == [
        candidates[3], candidates[0], active, parent]


class ListedBefore(LocalRegistry):
    """A registry whose listing was taken before another process changed it."""

    def __init__(self, root: Path, listing: list[Manifest]) -> None:
        super().__init__(root)
        self.listing = listing

    def versions(self) -> list[Manifest]:
        return self.listing


def test_versions_shadowed_or_deleted_since_the_listing_are_skipped(
        registry: LocalRegistry) -> None:
    _publish(registry, 0, activate=True)
    shadowed, gone, doomed = (_publish(registry, hour) for hour in (1, 2, 3))
    view = ListedBefore(registry.root, registry.versions())
    registry.set_shadow(shadowed)
    registry.delete(gone)
    assert prune_candidates(view, keep=0, in_use=set()) == [doomed]
    assert shadowed in {m.version for m in registry.versions()}
