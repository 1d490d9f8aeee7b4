"""Publishing a staged version: the worker mints its id, writes its card and verifies the
reloaded model before the registry seals, commits and activates it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shared.errors import RegistryError
from shared.registry import ActivePointer, Registry
from shared.registry.base import STAGING_DIR, VERSION_PATTERN
from shared.registry.files import CARD_HTML, CARD_MD, MODEL_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.versions import draft, version_dirs
from worker.publishing.publish import publish_staged

MANIFEST = draft(classes=("COVID", "Normal"), history={"loss": [0.9, 0.5]})


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return LocalRegistry(tmp_path / "models")


def _publish(registry: Registry, content: bytes,
             verify: Callable[[Path], None] = lambda path: None) -> str:
    staging = registry.new_staging()
    (staging / MODEL_FILE).write_bytes(content)
    return publish_staged(registry, staging, MANIFEST, verify, activate=True)


def _staging_leftovers(registry: Registry) -> list[Path]:
    base = registry.root / STAGING_DIR
    return list(base.iterdir()) if base.is_dir() else []


def test_the_card_names_the_version_and_is_sealed_with_it(registry: Registry) -> None:
    version = _publish(registry, b"model")
    manifest = registry.manifest(version)
    assert {CARD_MD, CARD_HTML, MODEL_FILE} <= set(manifest.files)
    card = registry.verified_file(version, CARD_MD)
    assert card is not None and card.read_text().startswith(f"# Model card: {version}")


def test_verify_is_called_on_the_staged_model(registry: Registry) -> None:
    seen: list[Path] = []

    def verify(path: Path) -> None:
        seen.append(path)
        assert path.read_bytes() == b"loadable"
        assert not VERSION_PATTERN.match(path.parent.name)  # not yet in place

    version = _publish(registry, b"loadable", verify=verify)
    assert len(seen) == 1 and seen[0].name == MODEL_FILE
    assert registry.active() == ActivePointer(version, 1)


def test_a_failing_verify_leaves_no_version_and_the_pointer_unchanged(registry: Registry) -> None:
    current = _publish(registry, b"good model")
    before = version_dirs(registry)

    def verify(path: Path) -> None:
        raise ValueError("keras could not load it")

    with pytest.raises(ValueError, match="could not load"):
        _publish(registry, b"broken model", verify=verify)
    assert version_dirs(registry) == before
    assert registry.active() == ActivePointer(current, 1)
    assert [m.version for m in registry.versions()] == [current]
    assert registry.clean_staging(older_than_s=0) == 1
    assert _staging_leftovers(registry) == []


def test_a_model_changed_during_verification_is_refused(registry: Registry) -> None:
    def tamper(path: Path) -> None:
        path.write_bytes(b"swapped")

    with pytest.raises(RegistryError):
        _publish(registry, b"original", verify=tamper)
    assert version_dirs(registry) == []
    assert registry.active() is None
