"""Pruning candidates (``CXR_KEEP_CANDIDATES``): the oldest versions beyond the newest N go,
but never the active version, the shadow, the parents of either, or what a job uses."""

from __future__ import annotations

import logging

from shared.errors import InUse, ModelNotFound
from shared.manifest import Manifest
from shared.registry.base import Registry

log = logging.getLogger(__name__)


def parents(manifest: Manifest) -> set[str]:
    """The versions ``manifest`` names as its parent: the one active when it was trained,
    and the one it was fine-tuned from."""
    named = {manifest.parent, manifest.lineage.parent if manifest.lineage else None}
    return {version for version in named if version is not None}


def protected(versions: list[Manifest], active: str | None, shadow: str | None) -> set[str]:
    """The active version, the shadow and their parents."""
    by_id = {manifest.version: manifest for manifest in versions}
    kept: set[str] = set()
    for version in (active, shadow):
        if version is None:
            continue
        kept.add(version)
        if version in by_id:
            kept |= parents(by_id[version])
    return kept


def prunable(versions: list[Manifest], active: str | None, shadow: str | None, keep: int,
             in_use: set[str]) -> list[str]:
    """The candidates beyond the newest ``keep``, oldest first; candidates are the versions
    other than the active one, the shadow, their parents and those ``in_use``."""
    spared = protected(versions, active, shadow) | in_use
    newest_first = sorted(versions, key=lambda m: (m.created_at, m.version), reverse=True)
    candidates = [m.version for m in newest_first if m.version not in spared]
    return list(reversed(candidates[keep:]))


def prune_candidates(registry: Registry, keep: int, in_use: set[str],
                     published: str | None = None) -> list[str]:
    """Delete what ``prunable`` names; returns the versions deleted. ``published``, the
    version whose publish prunes, counts among the candidates but is never deleted (the job
    that made it names it). One that became the active version or the shadow, or went,
    since it was listed is skipped."""
    active, shadow = registry.active(), registry.shadow()
    doomed = prunable(registry.versions(), active.version if active else None,
                      shadow.version if shadow else None, keep, in_use)
    deleted = []
    for version in (v for v in doomed if v != published):
        try:
            registry.delete(version)
        except (InUse, ModelNotFound) as exc:
            log.info("not pruning %s: %s", version, exc)
            continue
        deleted.append(version)
    return deleted
