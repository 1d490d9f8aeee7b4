"""The registry in a folder on a local (or shared) filesystem: a rename is the commit.

Layout under the root (``CXR_MODELS_DIR``)::

    <version>/model.keras  manifest.json  curves.png   one immutable folder per version
    .staging/<id>/                                     work in progress, same filesystem
    evaluations/<version>/<id>.json                    reports made after publishing
    ACTIVE                                             {"version", "generation", "updated_at"}
    SHADOW                                             the same, for the shadow

A sealed staging folder is fsynced and renamed into place in one step; only then is ACTIVE
replaced (write, fsync, ``os.replace``). A crash at any point leaves either the old state or
the new one. Deleting is the reverse: the version folder is renamed into ``.staging`` (gone
for readers in that step), then removed.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.checksums import sha256_file
from shared.errors import ModelNotFound, RegistryError
from shared.manifest import ExternalReport, Manifest
from shared.registry.base import (
    ACTIVE_FILE,
    EVALUATIONS_DIR,
    SHADOW_FILE,
    STAGING_DIR,
    STALE_STAGING_S,
    VERSION_PATTERN,
    ActivePointer,
    Registry,
    check_version,
    new_version_id,
    parse_manifest,
    parse_pointer,
    pointer_bytes,
    remove_stale_staging,
)
from shared.registry.files import MANIFEST_FILE, MODEL_FILE


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class LocalRegistry(Registry):
    """Versions in a folder on a local (or shared) filesystem: rename is the commit."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def version_dir(self, version: str) -> Path:
        return self.root / check_version(version)

    def model_path(self, version: str) -> Path:
        return self.version_dir(version) / MODEL_FILE

    def manifest(self, version: str) -> Manifest:
        path = self.version_dir(version) / MANIFEST_FILE
        try:
            return parse_manifest(path.read_bytes(), version)
        except FileNotFoundError:
            raise ModelNotFound(f"no model version {version!r}") from None

    def _version_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if VERSION_PATTERN.match(p.name)]

    def active(self) -> ActivePointer | None:
        return self._pointer(ACTIVE_FILE, "active")

    def shadow(self) -> ActivePointer | None:
        return self._pointer(SHADOW_FILE, "shadow")

    def _pointer(self, file: str, name: str) -> ActivePointer | None:
        try:
            return parse_pointer((self.root / file).read_bytes(), name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"the {name} pointer is unreadable: {exc}") from exc

    def _verified(self, version: str, name: str, sha256: str) -> Path:
        path = self.version_dir(version) / name
        if not path.is_file() or sha256_file(path) != sha256:
            raise RegistryError(f"{name} of {version} is missing or fails its checksum")
        return path

    def evaluations(self, version: str) -> list[ExternalReport]:
        folder = self.root / EVALUATIONS_DIR / check_version(version)
        if not folder.is_dir():
            return []
        return [ExternalReport.model_validate_json(p.read_bytes())
                for p in sorted(folder.glob("*.json"))]

    def save_evaluation(self, version: str, report: ExternalReport) -> str:
        self.manifest(version)
        folder = self.root / EVALUATIONS_DIR / version
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{new_version_id()}.json"
        tmp = folder / f".{name}.tmp"
        _write_durably(tmp, report.model_dump_json(indent=2).encode())
        os.replace(tmp, folder / name)
        return str(folder / name)

    def new_staging(self) -> Path:
        # On the registry's own filesystem, so that publishing is one rename.
        staging = self.root / STAGING_DIR / secrets.token_hex(8)
        staging.mkdir(parents=True)
        return staging

    def _commit(self, staging: Path, version: str) -> None:
        for path in staging.iterdir():
            _fsync_path(path)
        _fsync_path(staging)
        os.rename(staging, self.root / version)
        _fsync_path(self.root)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Orders pointer changes and deletions among writers; readers never wait."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def activate(self, version: str) -> ActivePointer:
        with self._locked():
            return self._point(ACTIVE_FILE, self.active, version)

    def set_shadow(self, version: str) -> ActivePointer:
        with self._locked():
            return self._point(SHADOW_FILE, self.shadow, version)

    def _point(self, file: str, current_of: Callable[[], ActivePointer | None],
               version: str) -> ActivePointer:
        """Replace the pointer ``file`` (under the lock): checked inside it, so that a
        deletion cannot slip between the check and the write."""
        self.manifest(version)
        if not self.model_path(version).is_file():
            raise ModelNotFound(f"no model version {version!r}")
        current = current_of()
        pointer = ActivePointer(version, (current.generation if current else 0) + 1)
        tmp = self.root / f".{file}.{secrets.token_hex(4)}"
        try:
            _write_durably(tmp, pointer_bytes(pointer))
            os.replace(tmp, self.root / file)
        finally:
            tmp.unlink(missing_ok=True)  # left only when the write failed (disk full)
        _fsync_path(self.root)
        return pointer

    def end_shadow(self) -> None:
        with self._locked():
            (self.root / SHADOW_FILE).unlink(missing_ok=True)
            _fsync_path(self.root)

    def delete(self, version: str) -> None:
        # Under the lock, so that no activation points at the version while it goes.
        with self._locked():
            super().delete(version)

    def _remove(self, version: str) -> None:
        trash = self.root / STAGING_DIR / f"{secrets.token_hex(8)}-deleted"
        trash.mkdir(parents=True)
        os.rename(self.version_dir(version), trash / version)  # unpublished in one step
        _fsync_path(self.root)
        evaluations = self.root / EVALUATIONS_DIR / version
        if evaluations.is_dir():
            os.rename(evaluations, trash / EVALUATIONS_DIR)
        # What a crash leaves here, clean_staging removes.
        shutil.rmtree(trash, ignore_errors=True)

    def clean_staging(self, older_than_s: float = STALE_STAGING_S) -> int:
        removed = remove_stale_staging(self.root / STAGING_DIR, older_than_s)
        cutoff = time.time() - older_than_s
        for file in (ACTIVE_FILE, SHADOW_FILE):
            for leftover in self.root.glob(f".{file}.*"):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink(missing_ok=True)
        # Reports of a version whose deletion was cut short between its two renames.
        evaluations = self.root / EVALUATIONS_DIR
        for folder in evaluations.iterdir() if evaluations.is_dir() else []:
            if not (self.root / folder.name).exists() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed
