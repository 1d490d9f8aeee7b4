"""The model registry on S3-compatible object storage (``CXR_MODELS_URI=s3://bucket/prefix``).

Objects under the prefix::

    <version>/model.keras curves.png ... manifest.json   the manifest is written last
    ACTIVE                                               {"version", "generation", "updated_at"}
    SHADOW                                               the same, for the shadow
    evaluations/<version>/<id>.json

An object store has no rename, so a version is uploaded file by file and its manifest last,
as the commit marker: a version without a manifest does not exist (listing, loading and
activating all skip it), and ``clean_staging`` removes its objects once they are stale. ACTIVE
is one small object replaced by one PUT that is conditional on the ETag just read (If-Match,
or If-None-Match for the first), so concurrent activations get distinct, increasing
generations; SHADOW is replaced the same way. Every process reads a version's files through
a local cache, and each file is checked against the manifest's sha256 before it is used.
Deleting a version removes its manifest first (it is then no longer published), then the
rest of its objects, its evaluations and this process's cached copy.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.checksums import sha256_file
from shared.errors import (
    InUse,
    ManifestUnreadable,
    ModelNotFound,
    RegistryError,
    RegistryUnavailable,
)
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

log = logging.getLogger(__name__)

MISSING = {"NoSuchKey", "404", "NotFound"}
CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}
ACTIVATION_TRIES = 10


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def make_client(endpoint_url: str | None) -> Any:
    """An S3 client (thread-safe) that retries throttling and dropped connections."""
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5,
                    read_timeout=60)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Failures of the store itself, as RegistryUnavailable (503), never a raw botocore one."""
    try:
        yield
    except ClientError as exc:
        raise RegistryUnavailable(f"the model store refused to {what}: {_code(exc)}") from exc
    except BotoCoreError as exc:
        raise RegistryUnavailable(f"the model store is unreachable ({what}): {exc}") from exc


class ObjectStoreRegistry(Registry):
    """Versions as objects under one prefix of one bucket."""

    def __init__(self, uri: str, cache_dir: Path, endpoint_url: str | None = None,
                 client: Any = None) -> None:
        self.uri = uri
        self.bucket, self.prefix = parse_uri(uri)
        self.cache_dir = cache_dir
        self.client = client or make_client(endpoint_url)
        # Versions are immutable: a manifest once read never changes.
        self._manifests: dict[str, Manifest] = {}

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """An object's bytes and ETag; None when there is no such object."""
        with _store_errors(f"read {key}"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in MISSING:
                    return None
                raise
            return answer["Body"].read(), str(answer["ETag"])

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        """Pages of a listing under ``prefix`` (a folder of the registry)."""
        kwargs = {"Bucket": self.bucket, "Prefix": self._key(prefix) + "/"}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        with _store_errors(f"list {prefix or 'versions'}"):
            yield from self.client.get_paginator("list_objects_v2").paginate(**kwargs)

    # -- reading -------------------------------------------------------------------------
    def manifest(self, version: str) -> Manifest:
        cached = self._manifests.get(check_version(version))
        if cached is None:
            found = self._get(self._key(version, MANIFEST_FILE))
            if found is None:
                raise ModelNotFound(f"no model version {version!r}")
            cached = self._manifests.setdefault(version, parse_manifest(found[0], version))
        return cached

    def _version_ids(self, folder: str = "") -> list[str]:
        ids = []
        for page in self._list(folder, delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if VERSION_PATTERN.match(name):
                    ids.append(name)
        return ids

    def active(self) -> ActivePointer | None:
        found = self._get(self._key(ACTIVE_FILE))
        return None if found is None else parse_pointer(found[0])

    def shadow(self) -> ActivePointer | None:
        found = self._get(self._key(SHADOW_FILE))
        return None if found is None else parse_pointer(found[0], "shadow")

    def _verified(self, version: str, name: str, sha256: str) -> Path:
        path = self.cache_dir / check_version(version) / name
        if path.is_file() and sha256_file(path) == sha256:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{secrets.token_hex(4)}")
        try:
            with _store_errors(f"download {name} of {version}"):
                try:
                    self.client.download_file(self.bucket, self._key(version, name), str(tmp))
                except ClientError as exc:
                    if _code(exc) in MISSING:
                        raise RegistryError(f"{name} of {version} is missing") from exc
                    raise
            if sha256_file(tmp) != sha256:
                raise RegistryError(f"{name} of {version} fails its checksum")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def forget_local(self, keep: set[str]) -> None:
        if not self.cache_dir.is_dir():
            return
        for folder in self.cache_dir.iterdir():
            if VERSION_PATTERN.match(folder.name) and folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    def evaluations(self, version: str) -> list[ExternalReport]:
        keys = sorted(item["Key"] for page in self._list(f"{EVALUATIONS_DIR}/"
                                                        f"{check_version(version)}")
                      for item in page.get("Contents", []))
        reports = [self._get(key) for key in keys if key.endswith(".json")]
        return [ExternalReport.model_validate_json(found[0]) for found in reports
                if found is not None]

    # -- writing -------------------------------------------------------------------------
    def _put(self, key: str, body: bytes, **conditions: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **conditions)

    def save_evaluation(self, version: str, report: ExternalReport) -> str:
        self.manifest(version)
        key = self._key(EVALUATIONS_DIR, version, f"{new_version_id()}.json")
        with _store_errors("store an evaluation"):
            self._put(key, report.model_dump_json(indent=2).encode())
        return f"s3://{self.bucket}/{key}"

    def new_staging(self) -> Path:
        staging = self.cache_dir / STAGING_DIR / secrets.token_hex(8)
        staging.mkdir(parents=True)
        return staging

    def _commit(self, staging: Path, version: str) -> None:
        files = sorted(p for p in staging.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
        uploaded: list[str] = []
        try:
            with _store_errors(f"store version {version}"):
                for path in files:
                    self.client.upload_file(str(path), self.bucket, self._key(version, path.name))
                    uploaded.append(self._key(version, path.name))
        except RegistryError:
            self._delete(uploaded)  # no manifest yet: invisible, and removed now if possible
            raise
        with _store_errors(f"commit version {version}"):
            # The commit. Should it fail without an answer, the version either exists
            # complete or its files are removed by clean_staging once stale.
            self._put(self._key(version, MANIFEST_FILE), (staging / MANIFEST_FILE).read_bytes())

    def _committed(self, version: str) -> bool:
        """Whether the version has its manifest (read once per process: it never changes)."""
        try:
            self.manifest(version)
        except ModelNotFound:
            return False
        except ManifestUnreadable:
            return True  # broken, but committed: not a publish's leftovers
        return True

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": key} for key in keys[start:start + 1000]]
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk})
            except (ClientError, BotoCoreError):
                log.warning("could not remove %d uncommitted object(s); clean_staging will",
                            len(chunk), exc_info=True)

    def activate(self, version: str) -> ActivePointer:
        return self._point(ACTIVE_FILE, version)

    def set_shadow(self, version: str) -> ActivePointer:
        return self._point(SHADOW_FILE, version)

    def end_shadow(self) -> None:
        with _store_errors("remove the shadow pointer"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(SHADOW_FILE))

    def _point(self, file: str, version: str) -> ActivePointer:
        """Replace the pointer ``file`` (ACTIVE or SHADOW) with one to ``version``."""
        self.manifest(version)
        with _store_errors(f"check {version}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(version, MODEL_FILE))
            except ClientError as exc:
                if _code(exc) in MISSING:
                    raise ModelNotFound(f"no model version {version!r}") from exc
                raise
        for _ in range(ACTIVATION_TRIES):
            pointer = self._try_point(file, version)
            if pointer is not None:
                return pointer
            time.sleep(random.uniform(0.01, 0.2))  # another activation won; read it again
        raise RegistryUnavailable(f"the {file.lower()} pointer kept changing under this "
                                  "change; nothing was changed")

    def _try_point(self, file: str, version: str) -> ActivePointer | None:
        key = self._key(file)
        current = self._get(key)
        generation = (parse_pointer(current[0], file.lower()).generation if current
                      else 0) + 1
        pointer = ActivePointer(version, generation)
        condition = {"IfMatch": current[1]} if current else {"IfNoneMatch": "*"}
        with _store_errors(f"replace the {file.lower()} pointer"):
            try:
                self._put(key, pointer_bytes(pointer), **condition)
            except ClientError as exc:
                if _code(exc) in CONFLICT:
                    return None
                if _code(exc) != "NotImplemented":
                    raise
                # A store without conditional writes: generations are then only as ordered
                # as the activations themselves.
                log.warning("the model store ignores conditional writes; activating anyway")
                self._put(key, pointer_bytes(pointer))
        return pointer

    def _remove(self, version: str) -> None:
        manifest_key = self._key(version, MANIFEST_FILE)
        found = self._get(manifest_key)
        self._manifests.pop(version, None)
        if found is None:  # this process's cached manifest outlived it
            raise ModelNotFound(f"no model version {version!r}")
        with _store_errors(f"delete version {version}"):
            self.client.delete_object(Bucket=self.bucket, Key=manifest_key)
        try:
            # No lock spans replicas: an activation that raced the first check is caught here.
            self._check_unpointed(version)
        except InUse:
            with _store_errors(f"restore version {version}"):
                self._put(manifest_key, found[0])
            raise
        for folder in (f"{EVALUATIONS_DIR}/{version}", version):
            # What a failure leaves of the version itself, clean_staging removes once stale.
            self._delete([item["Key"] for page in self._list(folder)
                          for item in page.get("Contents", [])])
        shutil.rmtree(self.cache_dir / version, ignore_errors=True)

    def clean_staging(self, older_than_s: float = STALE_STAGING_S) -> int:
        removed = remove_stale_staging(self.cache_dir / STAGING_DIR, older_than_s)
        stale = datetime.now(UTC) - timedelta(seconds=older_than_s)
        for version in self._version_ids():
            if not self._committed(version):
                removed += self._remove_if_stale(version, stale)
        # Reports a deletion that failed half-way left behind, once stale.
        for version in self._version_ids(EVALUATIONS_DIR):
            if not self._committed(version):
                removed += self._remove_if_stale(f"{EVALUATIONS_DIR}/{version}", stale)
        return removed

    def _remove_if_stale(self, folder: str, stale: datetime) -> int:
        """Remove the objects under ``folder`` if none is newer than ``stale``; 1 if so."""
        objects = [item for page in self._list(folder) for item in page.get("Contents", [])]
        if objects and all(item["LastModified"] <= stale for item in objects):
            self._delete([item["Key"] for item in objects])
            return 1
        return 0
