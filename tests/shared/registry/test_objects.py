"""The registry on object storage, against a real S3 API server (moto) on loopback: the
manifest-last commit, conditional activation, the verified local cache, a killed publish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from shared.config import Settings
from shared.errors import InUse, ModelNotFound, RegistryError, RegistryUnavailable
from shared.registry import ActivePointer, open_registry
from shared.registry.base import ACTIVE_FILE, SHADOW_FILE, new_version_id
from shared.registry.files import MANIFEST_FILE, MODEL_FILE
from shared.registry.local import LocalRegistry
from shared.registry.objects import ObjectStoreRegistry, parse_uri
from tests.helpers.env import REPO
from tests.helpers.services import S3Server
from tests.helpers.versions import draft, external_report

MANIFEST = draft(classes=("COVID", "Normal"))


@pytest.fixture
def uri(s3_server: S3Server) -> str:
    return f"s3://{s3_server.new_bucket()}/models"


def replica(s3_server: S3Server, uri: str, cache: Path) -> ObjectStoreRegistry:
    """A registry as one process sees it: its own client and its own cache."""
    return ObjectStoreRegistry(uri, cache, endpoint_url=s3_server.endpoint)


@pytest.fixture
def registry(s3_server: S3Server, uri: str, tmp_path: Path) -> ObjectStoreRegistry:
    return replica(s3_server, uri, tmp_path / "cache")


def _publish(registry: ObjectStoreRegistry, content: bytes, **kwargs: Any) -> str:
    staging = registry.new_staging()
    (staging / MODEL_FILE).write_bytes(content)
    (staging / "curves.png").write_bytes(b"\x89PNG curves of " + content)
    try:
        return registry.publish(staging, MANIFEST, **kwargs)
    finally:
        registry.discard(staging)


def _keys(registry: ObjectStoreRegistry) -> list[str]:
    pages = registry.client.get_paginator("list_objects_v2").paginate(
        Bucket=registry.bucket, Prefix=registry.prefix + "/")
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def test_parse_uri() -> None:
    assert parse_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError):
        parse_uri("/srv/models")


def test_settings_choose_the_store(tmp_path: Path) -> None:
    local = Settings(models_dir=tmp_path / "m", state_dir=tmp_path / "s")
    assert isinstance(open_registry(local), LocalRegistry)
    remote = Settings(models_dir=tmp_path / "m", state_dir=tmp_path / "s",
                      models_uri="s3://cxr-models/prod", s3_endpoint_url="http://minio:9000")
    store = open_registry(remote)
    assert isinstance(store, ObjectStoreRegistry)
    assert (store.bucket, store.prefix) == ("cxr-models", "prod")
    assert store.cache_dir == tmp_path / "s" / "model-cache"
    with pytest.raises(ValueError):
        Settings(models_uri="s3://UPPER_case")


def test_publish_uploads_the_files_then_activates(registry: ObjectStoreRegistry,
                                                  s3_server: S3Server, uri: str,
                                                  tmp_path: Path) -> None:
    version = _publish(registry, b"model one")
    assert _keys(registry) == sorted(f"models/{version}/{name}" for name in
                                     (MODEL_FILE, "curves.png", MANIFEST_FILE)) + [
        f"models/{ACTIVE_FILE}"]
    assert registry.active() == ActivePointer(version, 1)
    # Another replica, with an empty cache, sees the same and gets verified copies.
    other = replica(s3_server, uri, tmp_path / "other-cache")
    assert other.active() == ActivePointer(version, 1)
    assert [m.version for m in other.versions()] == [version]
    path = other.verified_model_path(version)
    assert path.read_bytes() == b"model one"
    assert path.is_relative_to(tmp_path / "other-cache")
    assert other.verified_file(version, "curves.png").read_bytes() == b"\x89PNG curves of model one"
    assert other.verified_file(version, "model.onnx") is None
    assert not list((tmp_path / "cache").glob(".staging/*"))  # the publisher's staging is gone


def test_versions_are_newest_first_and_activation_rolls_back(
        registry: ObjectStoreRegistry) -> None:
    first = _publish(registry, b"v1")
    second = _publish(registry, b"v2", activate=False)
    assert registry.active() == ActivePointer(first, 1)
    assert {m.version for m in registry.versions()} == {first, second}
    assert registry.activate(second) == ActivePointer(second, 2)
    assert registry.activate(first) == ActivePointer(first, 3)
    assert registry.verified_model_path(registry.active().version).read_bytes() == b"v1"


def test_a_version_without_a_manifest_does_not_exist(registry: ObjectStoreRegistry) -> None:
    published = _publish(registry, b"complete")
    orphan = new_version_id()
    registry.client.put_object(Bucket=registry.bucket, Key=f"models/{orphan}/{MODEL_FILE}",
                               Body=b"half of a publish")
    assert [m.version for m in registry.versions()] == [published]
    for call in (registry.manifest, registry.activate, registry.verified_model_path):
        with pytest.raises(ModelNotFound):
            call(orphan)
    assert registry.active() == ActivePointer(published, 1)
    assert registry.clean_staging() == 0  # fresh: could be a publish still uploading
    assert registry.clean_staging(older_than_s=0) == 1
    assert not [key for key in _keys(registry) if orphan in key]
    assert registry.verified_model_path(published).read_bytes() == b"complete"


@pytest.mark.parametrize("version", ["latest", "../ACTIVE", "20250101-000000-ABCDEF"])
def test_invalid_version_strings_are_not_found(registry: ObjectStoreRegistry,
                                               version: str) -> None:
    for call in (registry.activate, registry.manifest, registry.verified_model_path,
                 registry.evaluations):
        with pytest.raises(ModelNotFound):
            call(version)


def test_the_cache_is_verified_and_heals(registry: ObjectStoreRegistry) -> None:
    version = _publish(registry, b"pristine model")
    cached = registry.verified_model_path(version)
    cached.write_bytes(b"pristine modeL")  # bit rot on the replica's disk
    assert registry.verified_model_path(version).read_bytes() == b"pristine model"
    # A corrupted object in the store is refused, and nothing is left in the cache for it.
    registry.client.put_object(Bucket=registry.bucket, Key=f"models/{version}/{MODEL_FILE}",
                               Body=b"tampered model")
    cached.unlink()
    with pytest.raises(RegistryError, match="checksum"):
        registry.verified_model_path(version)
    assert list(cached.parent.iterdir()) == []  # not even a temporary file
    registry.client.delete_object(Bucket=registry.bucket, Key=f"models/{version}/{MODEL_FILE}")
    with pytest.raises(RegistryError, match="missing"):
        registry.verified_model_path(version)
    assert list(cached.parent.iterdir()) == []


def test_forget_local_keeps_only_the_named_versions(registry: ObjectStoreRegistry) -> None:
    versions = [_publish(registry, f"model {i}".encode()) for i in range(3)]
    for version in versions:
        registry.verified_model_path(version)
    registry.forget_local({versions[-1], versions[-2]})
    cached = sorted(p.name for p in registry.cache_dir.iterdir() if not p.name.startswith("."))
    assert cached == sorted(versions[1:])


def test_evaluations_are_stored_beside_the_versions(registry: ObjectStoreRegistry) -> None:
    version = _publish(registry, b"evaluated")
    assert registry.evaluations(version) == []
    report = external_report(version)
    where = registry.save_evaluation(version, report)
    assert where.startswith(f"s3://{registry.bucket}/models/evaluations/{version}/")
    assert registry.evaluations(version) == [report]
    with pytest.raises(ModelNotFound):
        registry.save_evaluation(new_version_id(), external_report(new_version_id()))


def test_concurrent_activations_get_distinct_generations(s3_server: S3Server, uri: str,
                                                         tmp_path: Path) -> None:
    first = replica(s3_server, uri, tmp_path / "c0")
    versions = [_publish(first, f"model {i}".encode(), activate=False) for i in range(6)]
    pointers: list[ActivePointer] = []
    barrier = threading.Barrier(len(versions))

    def activate(i: int) -> None:
        mine = replica(s3_server, uri, tmp_path / f"c{i}")
        barrier.wait()
        pointers.append(mine.activate(versions[i]))

    threads = [threading.Thread(target=activate, args=(i,)) for i in range(len(versions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Conditional writes: no two activations read the same generation and both won.
    assert sorted(p.generation for p in pointers) == list(range(1, len(versions) + 1))
    last = max(pointers, key=lambda p: p.generation)
    assert first.active() == last


def test_an_unreachable_store_is_registry_unavailable(tmp_path: Path) -> None:
    client = boto3.session.Session().client(
        "s3", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1},
                                                               connect_timeout=1))
    down = ObjectStoreRegistry("s3://cxr-down/models", tmp_path, client=client)
    for call in (down.active, down.versions):
        with pytest.raises(RegistryUnavailable, match="unreachable"):
            call()


KILLED_PUBLISH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from shared.registry.objects import ObjectStoreRegistry
    from tests.helpers.versions import draft

    uri, cache, endpoint = sys.argv[1:4]
    registry = ObjectStoreRegistry(uri, Path(cache), endpoint_url=endpoint)

    def stall(**_):  # the first file is in the store: hold the publish there
        print("uploaded", flush=True)
        time.sleep(120)

    registry.client.meta.events.register("after-call.s3.PutObject", stall)
    staging = registry.new_staging()
    (staging / "model.keras").write_bytes(b"x" * 3_000_000)
    (staging / "curves.png").write_bytes(b"curves")
    (staging / "shift.npz").write_bytes(b"shift")
    registry.publish(staging, draft(classes=("a", "b")))
""")


def test_a_publish_killed_halfway_leaves_no_version(registry: ObjectStoreRegistry,
                                                    s3_server: S3Server, uri: str,
                                                    tmp_path: Path) -> None:
    current = _publish(registry, b"serving model")
    before = _keys(registry)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISH, uri, str(tmp_path / "killed-cache"),
         s3_server.endpoint], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "uploaded"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    leftovers = sorted(set(_keys(registry)) - set(before))
    assert leftovers and all(not key.endswith(MANIFEST_FILE) for key in leftovers)
    # Every replica, old or new, sees the registry as it was.
    for view in (registry, replica(s3_server, uri, tmp_path / "fresh-cache")):
        assert view.active() == ActivePointer(current, 1)
        assert [m.version for m in view.versions()] == [current]
        assert view.verified_model_path(current).read_bytes() == b"serving model"
    half = leftovers[0].split("/")[1]
    with pytest.raises(ModelNotFound):
        registry.activate(half)
    # The leftovers go once stale, and the next publish is unaffected.
    assert registry.clean_staging(older_than_s=0) == 1
    assert _keys(registry) == before
    following = _publish(registry, b"next model")
    assert registry.active() == ActivePointer(following, 2)
    assert json.loads(registry.client.get_object(
        Bucket=registry.bucket, Key=f"models/{following}/{MANIFEST_FILE}")["Body"].read()
    )["version"] == following


def test_every_replica_follows_the_shadow(registry: ObjectStoreRegistry, s3_server: S3Server,
                                          uri: str, tmp_path: Path) -> None:
    other = replica(s3_server, uri, tmp_path / "other-cache")
    active = _publish(registry, b"active")
    first = _publish(registry, b"first", activate=False)
    second = _publish(registry, b"second", activate=False)
    assert registry.shadow() is None
    registry.end_shadow()  # none to end: nothing happens
    assert registry.set_shadow(first) == ActivePointer(first, 1)
    assert other.shadow() == ActivePointer(first, 1)
    assert other.set_shadow(second) == ActivePointer(second, 2)  # one at a time
    assert registry.shadow() == ActivePointer(second, 2)
    assert registry.active() == ActivePointer(active, 1)
    with pytest.raises(ModelNotFound):
        registry.set_shadow(new_version_id())
    other.end_shadow()
    assert registry.shadow() is None
    assert f"models/{SHADOW_FILE}" not in _keys(registry)


def test_delete_removes_every_object_manifest_first(registry: ObjectStoreRegistry,
                                                    s3_server: S3Server, uri: str,
                                                    tmp_path: Path) -> None:
    kept = _publish(registry, b"active")
    doomed = _publish(registry, b"candidate", activate=False)
    registry.save_evaluation(doomed, external_report(doomed))
    registry.save_evaluation(kept, external_report(kept))
    cached = registry.verified_model_path(doomed)
    before = _keys(registry)
    deleted: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        keys = [params["Key"]] if "Key" in params else [
            item["Key"] for item in params["Delete"]["Objects"]]
        deleted.extend(keys)

    registry.client.meta.events.register("before-parameter-build.s3.DeleteObject", record)
    registry.client.meta.events.register("before-parameter-build.s3.DeleteObjects", record)
    registry.delete(doomed)
    assert deleted[0] == f"models/{doomed}/{MANIFEST_FILE}"  # unpublished before the rest
    assert sorted(deleted) == sorted(key for key in before if doomed in key)
    assert _keys(registry) == [key for key in before if doomed not in key]
    assert not cached.parent.exists()  # this process's copy is dropped
    other = replica(s3_server, uri, tmp_path / "other-cache")
    for view in (registry, other):
        assert [m.version for m in view.versions()] == [kept]
        assert view.evaluations(doomed) == []
        assert view.evaluations(kept) == [external_report(kept)]
        for call in (view.manifest, view.activate, view.delete):
            with pytest.raises(ModelNotFound):
                call(doomed)


def test_the_active_version_and_the_shadow_cannot_be_deleted(
        registry: ObjectStoreRegistry) -> None:
    active = _publish(registry, b"active")
    shadow = _publish(registry, b"shadow", activate=False)
    registry.set_shadow(shadow)
    before = _keys(registry)
    for version, name in ((active, "active version"), (shadow, "shadow")):
        with pytest.raises(InUse, match=name):
            registry.delete(version)
    assert _keys(registry) == before
    with pytest.raises(ModelNotFound):
        registry.delete(new_version_id())


def test_a_replica_with_a_stale_manifest_finds_the_version_gone(
        registry: ObjectStoreRegistry, s3_server: S3Server, uri: str, tmp_path: Path) -> None:
    _publish(registry, b"active")
    doomed = _publish(registry, b"candidate", activate=False)
    other = replica(s3_server, uri, tmp_path / "other-cache")
    other.manifest(doomed)  # cached there: a manifest never changes while it exists
    registry.delete(doomed)
    with pytest.raises(ModelNotFound):
        other.delete(doomed)
    assert doomed not in {m.version for m in other.versions()}


def test_an_activation_racing_a_delete_keeps_the_version(registry: ObjectStoreRegistry,
                                                         s3_server: S3Server, uri: str,
                                                         tmp_path: Path) -> None:
    _publish(registry, b"active")
    raced = _publish(registry, b"candidate", activate=False)
    other = replica(s3_server, uri, tmp_path / "other-cache")

    def activate_elsewhere(**_: Any) -> None:  # the manifest has just gone
        registry.client.meta.events.unregister("after-call.s3.DeleteObject", activate_elsewhere)
        other.activate(raced)

    other.manifest(raced)
    registry.client.meta.events.register("after-call.s3.DeleteObject", activate_elsewhere)
    with pytest.raises(InUse):
        registry.delete(raced)
    assert registry.active() is not None and registry.active().version == raced
    assert raced in {m.version for m in registry.versions()}
    assert registry.verified_model_path(raced).read_bytes() == b"candidate"


def test_clean_staging_removes_the_reports_of_a_deleted_version(
        registry: ObjectStoreRegistry) -> None:
    _publish(registry, b"active")
    gone = new_version_id()
    registry.client.put_object(Bucket=registry.bucket,
                               Key=f"models/evaluations/{gone}/report.json", Body=b"{}")
    assert registry.clean_staging() == 0  # fresh: could be a deletion under way
    assert registry.clean_staging(older_than_s=0) == 1
    assert not [key for key in _keys(registry) if gone in key]
