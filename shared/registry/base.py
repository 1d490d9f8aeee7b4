"""What every store of versions shares: sealing a staged version, reading manifests, the
pointers' format (ACTIVE, and SHADOW for the candidate scored beside it), deleting a version."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from shared.checksums import sha256_file
from shared.errors import InUse, ManifestUnreadable, ModelNotFound, RegistryError
from shared.manifest import ExternalReport, Manifest, ManifestDraft
from shared.registry.files import MANIFEST_FILE, MODEL_FILE

ACTIVE_FILE = "ACTIVE"
# The shadow: a published candidate that scores live traffic beside the active version.
SHADOW_FILE = "SHADOW"
STAGING_DIR = ".staging"
# Reports about a version made after it was published (external evaluations) live apart
# from its immutable folder.
EVALUATIONS_DIR = "evaluations"
VERSION_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
STALE_STAGING_S = 6 * 3600


@dataclass(frozen=True)
class ActivePointer:
    version: str
    generation: int


def new_version_id(now: datetime | None = None) -> str:
    """Sortable and unique without coordination: UTC time plus 24 random bits."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


class Registry(ABC):
    """What callers use, whatever the store: files come back as verified local paths."""

    # -- reading -------------------------------------------------------------------------
    @abstractmethod
    def manifest(self, version: str) -> Manifest:
        """The sealed manifest of a published version (ModelNotFound otherwise)."""

    @abstractmethod
    def _version_ids(self) -> list[str]:
        """Names in the store that look like versions, published or not."""

    @abstractmethod
    def active(self) -> ActivePointer | None:
        """The active pointer; None before the first activation."""

    @abstractmethod
    def shadow(self) -> ActivePointer | None:
        """The shadow pointer; None when no version is shadowed."""

    @abstractmethod
    def _verified(self, version: str, name: str, sha256: str) -> Path:
        """A local path of the version's file ``name`` whose content has this sha256."""

    @abstractmethod
    def evaluations(self, version: str) -> list[ExternalReport]:
        """External evaluation reports of a version, oldest first."""

    def versions(self) -> list[Manifest]:
        """Manifests of all published versions, newest first."""
        found = []
        for version in self._version_ids():
            try:
                found.append(self.manifest(version))
            except (ModelNotFound, ManifestUnreadable):
                continue  # not (yet) published, or broken: not a version
        # Version ids sort by second only; created_at orders versions of the same second.
        return sorted(found, key=lambda m: (m.created_at, m.version), reverse=True)

    def verified_model_path(self, version: str) -> Path:
        """The model file, after checking its sha256 against the manifest."""
        return self._verified(version, MODEL_FILE, self.manifest(version).model_sha256)

    def verified_file(self, version: str, name: str) -> Path | None:
        """Another file of the version (``shared.registry.files``) after checking its
        sha256; None when the version has no such file."""
        expected = self.manifest(version).files.get(name)
        return None if expected is None else self._verified(version, name, expected)

    def forget_local(self, keep: set[str]) -> None:
        """Drop local copies of versions other than ``keep`` (a local store has none)."""
        return None

    # -- writing -------------------------------------------------------------------------
    @abstractmethod
    def save_evaluation(self, version: str, report: ExternalReport) -> str:
        """Store an external evaluation report of an existing version; returns where."""

    @abstractmethod
    def new_staging(self) -> Path:
        """A fresh local folder to write a version into."""

    @abstractmethod
    def _commit(self, staging: Path, version: str) -> None:
        """Make the sealed staging folder the published ``version``, all or nothing."""

    @abstractmethod
    def activate(self, version: str) -> ActivePointer:
        """Point ACTIVE at an existing version (publish, pin or roll back)."""

    @abstractmethod
    def set_shadow(self, version: str) -> ActivePointer:
        """Make a published version the shadow, replacing any earlier one; its generation
        increases as ACTIVE's does, so that every replica polling it sees the change."""

    @abstractmethod
    def end_shadow(self) -> None:
        """Remove the shadow pointer (nothing to do when there is none)."""

    @abstractmethod
    def _remove(self, version: str) -> None:
        """Unpublish ``version`` at once, then remove its files and its evaluations."""

    def delete(self, version: str) -> None:
        """Remove a published version with its evaluations, all or nothing for a reader.
        Callers refuse what jobs use; this refuses the active version and the shadow, as a
        last guard (InUse), and an unknown version (ModelNotFound)."""
        self.manifest(version)
        self._check_unpointed(version)
        self._remove(version)

    def _check_unpointed(self, version: str) -> None:
        """InUse when ACTIVE or SHADOW names ``version``."""
        for name, pointer in (("active version", self.active()), ("shadow", self.shadow())):
            if pointer is not None and pointer.version == version:
                raise InUse(f"version {version} is the {name}; it cannot be deleted")

    @abstractmethod
    def clean_staging(self, older_than_s: float = STALE_STAGING_S) -> int:
        """Remove what crashed publishes left; returns how many."""

    def publish(self, staging: Path, manifest: ManifestDraft, version: str | None = None,
                activate: bool = True) -> str:
        """Seal a staged version (its files' sha256 in the manifest), commit it and (by
        default) activate it. ``version``: the id the caller minted (``new_version_id``) for
        files that name it, such as a model card; a fresh one otherwise."""
        model_file = staging / MODEL_FILE
        if not model_file.is_file():
            raise RegistryError("staging holds no model file")
        version = version or new_version_id()
        if not VERSION_PATTERN.match(version):
            raise RegistryError(f"{version!r} is not a version id")
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        sealed = manifest.seal(version, files=files, model_sha256=files[MODEL_FILE])
        # Made durable by the store's commit, with the other files.
        (staging / MANIFEST_FILE).write_text(sealed.model_dump_json(indent=2))
        self._commit(staging, version)
        if activate:
            self.activate(version)
        return version

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(base: Path, older_than_s: float) -> int:
    """Remove the staging folders under ``base`` untouched for ``older_than_s``: what
    crashed publishes left. Returns how many."""
    if not base.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    stale = [folder for folder in base.iterdir() if folder.stat().st_mtime < cutoff]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return len(stale)


def parse_manifest(raw: str | bytes, version: str) -> Manifest:
    """A stored manifest read back; RegistryError when it is not one."""
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise ManifestUnreadable(f"the manifest of {version} is unreadable: {exc}") from exc


def check_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise ModelNotFound(f"no model version {version!r}")
    return version


def parse_pointer(raw: bytes, name: str = "active") -> ActivePointer:
    try:
        data = json.loads(raw)
        return ActivePointer(version=str(data["version"]), generation=int(data["generation"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"the {name} pointer is unreadable: {exc}") from exc


def pointer_bytes(pointer: ActivePointer) -> bytes:
    return json.dumps({"version": pointer.version, "generation": pointer.generation,
                       "updated_at": datetime.now(UTC).isoformat()}).encode()
