"""Published versions for the shadow's tests: an active one, a candidate, and a candidate
whose model file was damaged after it was published."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.monitoring import shadow
from shared.registry.local import LocalRegistry
from tests.helpers.env import sample_files
from tests.helpers.versions import publish_random


@dataclass(frozen=True)
class Versions:
    registry: LocalRegistry
    active: str
    candidate: str
    broken: str  # its model file fails its checksum


@pytest.fixture(scope="package")
def published(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    registry = LocalRegistry(tmp_path_factory.mktemp("models"))
    active = publish_random(registry, 1, activate=True)
    candidate = publish_random(registry, 2)
    broken = publish_random(registry, 3)
    model_file = registry.model_path(broken)
    model_file.write_bytes(model_file.read_bytes()[:1000])
    return Versions(registry, active, candidate, broken)


@pytest.fixture
def versions(published: Versions) -> Iterator[Versions]:
    """The published versions; the shadow pointer is removed after the test."""
    yield published
    published.registry.end_shadow()


@pytest.fixture
def at_full_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shadow's threads at the priority of the rest: the suite shares the machine with
    other runs, which at the lowest priority the shadow would wait for."""
    monkeypatch.setattr(shadow, "lower_priority", lambda priority: None)


@pytest.fixture(scope="package")
def xrays(radiography_root: Path) -> list[bytes]:
    """Three real radiographs, one per class."""
    return [files[0].read_bytes() for files in sample_files(radiography_root, 1).values()]
