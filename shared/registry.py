"""The model registry: immutable version folders and an atomically replaced active pointer.

Layout under the root (``CXR_MODELS_DIR``)::

    <version>/model.keras  manifest.json  curves.png   one immutable folder per version
    .staging/<id>/                                     work in progress, same filesystem
    ACTIVE                                             {"version", "generation", "updated_at"}

A version is written into staging, checksummed, verified by loading it back, fsynced and then
renamed into place in one step; only then is ACTIVE replaced (write, fsync, ``os.replace``).
A crash at any point leaves either the old state or the new one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.errors import ModelNotFound, RegistryError
from shared.modeling import sha256_file

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
CURVES_FILE = "curves.png"
RELIABILITY_FILE = "reliability.png"
ACTIVE_FILE = "ACTIVE"
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


class Registry:
    """Versions on a local (or shared) filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- reading -------------------------------------------------------------------------
    def version_dir(self, version: str) -> Path:
        if not VERSION_PATTERN.match(version):
            raise ModelNotFound(f"no model version {version!r}")
        return self.root / version

    def manifest(self, version: str) -> dict[str, Any]:
        path = self.version_dir(version) / MANIFEST_FILE
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ModelNotFound(f"no model version {version!r}") from None

    def versions(self) -> list[dict[str, Any]]:
        """Manifests of all published versions, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            if VERSION_PATTERN.match(path.name):
                try:
                    found.append(self.manifest(path.name))
                except (ModelNotFound, json.JSONDecodeError):
                    continue
        # Version ids sort by second only; created_at orders versions of the same second.
        return sorted(found, key=lambda m: (str(m.get("created_at", "")), m["version"]),
                      reverse=True)

    def active(self) -> ActivePointer | None:
        try:
            raw = json.loads((self.root / ACTIVE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError) as exc:
            raise RegistryError(f"the active pointer is unreadable: {exc}") from exc
        return ActivePointer(version=str(raw["version"]), generation=int(raw["generation"]))

    def model_path(self, version: str) -> Path:
        return self.version_dir(version) / MODEL_FILE

    def verified_model_path(self, version: str) -> Path:
        """The model file, after checking its sha256 against the manifest."""
        expected = self.manifest(version).get("model_sha256")
        path = self.model_path(version)
        if not path.is_file() or sha256_file(path) != expected:
            raise RegistryError(f"model file of {version} is missing or fails its checksum")
        return path

    def verified_file(self, version: str, name: str) -> Path | None:
        """Another artifact of the version (e.g. model.onnx) after checking its sha256; None
        when the version has no such file."""
        expected = self.manifest(version).get("files", {}).get(name)
        if expected is None:
            return None
        path = self.version_dir(version) / name
        if not path.is_file() or sha256_file(path) != expected:
            raise RegistryError(f"{name} of {version} is missing or fails its checksum")
        return path

    def evaluations(self, version: str) -> list[dict[str, Any]]:
        """External evaluation reports of a version, oldest first."""
        folder = self.root / EVALUATIONS_DIR / self.version_dir(version).name
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    # -- writing -------------------------------------------------------------------------
    def save_evaluation(self, version: str, report: dict[str, Any]) -> Path:
        """Store an external evaluation report of an existing version (atomic write)."""
        self.manifest(version)
        folder = self.root / EVALUATIONS_DIR / version
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{new_version_id()}.json"
        tmp = folder / f".{name}.tmp"
        _write_durably(tmp, json.dumps(report, indent=2).encode())
        os.replace(tmp, folder / name)
        return folder / name

    def new_staging(self) -> Path:
        """A fresh folder on the registry's filesystem to write a version into."""
        staging = self.root / STAGING_DIR / secrets.token_hex(8)
        staging.mkdir(parents=True)
        return staging

    def publish(
        self,
        staging: Path,
        manifest: dict[str, Any],
        verify: Callable[[Path], None] | None = None,
        activate: bool = True,
        render: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> str:
        """Seal a staged version, move it into place and (by default) activate it.

        ``render(staging, manifest)`` may add files that need the version id (a model card).
        """
        model_file = staging / MODEL_FILE
        if not model_file.is_file():
            raise RegistryError("staging holds no model file")
        version = new_version_id()
        if render is not None:
            render(staging, {**manifest, "version": version})
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        sealed = {**manifest, "version": version, "model_sha256": files[MODEL_FILE],
                  "files": files}
        _write_durably(staging / MANIFEST_FILE, json.dumps(sealed, indent=2).encode())
        for name in files:
            _fsync_path(staging / name)
        if verify is not None:
            verify(model_file)
        if sha256_file(model_file) != files[MODEL_FILE]:
            raise RegistryError("model file changed while it was being verified")
        _fsync_path(staging)
        os.rename(staging, self.root / version)
        _fsync_path(self.root)
        if activate:
            self.activate(version)
        return version

    def activate(self, version: str) -> ActivePointer:
        """Point ACTIVE at an existing version (publish, pin or roll back)."""
        if not self.model_path(version).is_file():
            raise ModelNotFound(f"no model version {version!r}")
        self.manifest(version)
        # The lock only orders generations between concurrent activations; readers never wait.
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.active()
            pointer = ActivePointer(version, (current.generation if current else 0) + 1)
            tmp = self.root / f".{ACTIVE_FILE}.{secrets.token_hex(4)}"
            payload = {"version": version, "generation": pointer.generation,
                       "updated_at": datetime.now(UTC).isoformat()}
            try:
                _write_durably(tmp, json.dumps(payload).encode())
                os.replace(tmp, self.root / ACTIVE_FILE)
            finally:
                tmp.unlink(missing_ok=True)  # left only when the write failed (disk full)
            _fsync_path(self.root)
        return pointer

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def clean_staging(self, older_than_s: float = STALE_STAGING_S) -> int:
        """Remove staging folders left by crashed publishes; returns how many."""
        base = self.root / STAGING_DIR
        if not base.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for folder in base.iterdir():
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        for leftover in self.root.glob(f".{ACTIVE_FILE}.*"):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink(missing_ok=True)
        return removed
