"""Activating a version over HTTP: one not shown better than chance (its test interval
includes chance, or it has none) answers 409 confirmation_required until force=true confirms
it, and the audit trail records the warning; a proven one activates at once. Activating the
shadow goes through the same guard."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.config import Settings
from shared.manifest import Metrics, SplitMetrics
from shared.registry.local import LocalRegistry
from tests.helpers.env import AS_ADMIN
from tests.helpers.versions import publish_random, republish

CLASSES = ("COVID", "Normal")  # chance is 0.5
AT_CHANCE = "the test balanced accuracy interval [0.400, 0.700] includes chance (0.500)"


@dataclass(frozen=True)
class Versions:
    client: TestClient
    registry: LocalRegistry
    active: str
    proven: str  # interval above chance
    at_chance: str  # interval includes chance
    unknown: str  # no interval at all


def _tested(interval: list[float]) -> Metrics:
    return Metrics(test=SplitMetrics(images=40, balanced_accuracy=sum(interval) / 2,
                                     balanced_accuracy_ci=interval))


@pytest.fixture
def versions(settings: Settings) -> Iterator[Versions]:
    registry = LocalRegistry(settings.models_dir)
    first = publish_random(registry, seed=1, classes=CLASSES)
    active, proven, at_chance = (
        republish(registry, first, registry, {}, activate=False, metrics=_tested(interval))
        for interval in ([0.8, 0.9], [0.7, 0.9], [0.4, 0.7]))
    registry.activate(active)
    # One batch size to warm: each version loads (and the app stops) sooner.
    app = create_app(settings.model_copy(update={"batch_max_size": 1}))
    with TestClient(app, headers=AS_ADMIN) as client:
        yield Versions(client, registry, active, proven, at_chance, first)


def _activate(versions: Versions, version: str, **params: Any) -> Any:
    return versions.client.post(f"/models/{version}/activate", params=params)


def _last_audit(client: TestClient) -> dict[str, Any]:
    answer = client.get("/audit", params={"action": "activate", "limit": 1})
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["records"][0])


def _active(versions: Versions) -> str | None:
    pointer = versions.registry.active()
    return pointer.version if pointer else None


@pytest.mark.parametrize(("which", "warning", "meaning"), [
    ("at_chance", AT_CHANCE, "every answer would be marked unreliable"),
    ("unknown", "it has no test balanced accuracy interval: nothing shows it beats chance",
     "its answers unmarked")])
def test_an_unproven_version_needs_force_and_the_trail_records_it(
        versions: Versions, which: str, warning: str, meaning: str) -> None:
    version = getattr(versions, which)
    refused = _activate(versions, version)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "confirmation_required"
    # what it means, and how to confirm
    assert warning in error["message"] and meaning in error["message"]
    assert f"/models/{version}/activate?force=true" in error["message"]
    assert f"cxr models activate {version} --force" in error["message"]
    assert _active(versions) == versions.active
    refusal = _last_audit(versions.client)
    assert (refusal["outcome"], refusal["error"], refusal["target"]) == (
        "refused", "confirmation_required", version)

    forced = _activate(versions, version, force="true")
    assert forced.status_code == 200, forced.text
    assert forced.json()["active"] == version == _active(versions)
    record = _last_audit(versions.client)
    assert (record["outcome"], record["detail"]) == ("ok", f"forced: {warning}")


def test_a_proven_version_activates_without_force(versions: Versions) -> None:
    activated = _activate(versions, versions.proven)
    assert activated.status_code == 200, activated.text
    assert _active(versions) == versions.proven
    assert _last_audit(versions.client)["detail"] is None
    # force on a proven version changes nothing and records nothing forced
    assert _activate(versions, versions.active, force="true").status_code == 200
    assert _last_audit(versions.client)["detail"] is None


def test_activating_an_unproven_shadow_is_guarded_too(versions: Versions) -> None:
    assert versions.client.post(f"/models/{versions.at_chance}/shadow").status_code == 200
    refused = _activate(versions, versions.at_chance)
    assert refused.json()["error"]["code"] == "confirmation_required"
    shadow = versions.registry.shadow()
    assert shadow is not None and shadow.version == versions.at_chance  # still the shadow
    forced = _activate(versions, versions.at_chance, force="true")
    assert (forced.json()["active"], forced.json()["shadow"]) == (versions.at_chance, None)
    assert _last_audit(versions.client)["detail"] == (
        f"forced: {AT_CHANCE}; was the shadow; the shadow ended")
