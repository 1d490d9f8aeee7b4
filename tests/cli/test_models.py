"""`cxr models list` and `cxr models activate` on a real registry: a version not shown
better than chance needs --force, and the audit trail records what was done."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.config import Settings
from shared.manifest import Metrics, SplitMetrics
from shared.monitoring.audit import open_audit_store
from shared.monitoring.records import AuditQuery
from shared.registry.base import ACTIVE_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.cli import one_line_error
from tests.helpers.versions import Trained, publish_random


def test_models_are_listed_and_one_is_activated(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxr_cli import app, runtime

    # the suite's trained version, in a registry of this test's own, with none active
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    (models / ACTIVE_FILE).unlink(missing_ok=True)
    monkeypatch.setattr(runtime, "get_settings", lambda: Settings(models_dir=models,
                                                              state_dir=tmp_path / "state"))
    runner = CliRunner()
    version, manifest = trained.version, trained.registry.manifest(trained.version)

    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    header, row = listed.stdout.splitlines()
    assert header.split() == ["Version", "Created", "(UTC)", "Dataset", "Test", "balanced",
                              "accuracy", "(95%", "CI)", "Better", "than", "chance", "Active"]
    test, reliability = manifest.metrics.test, manifest.reliability
    assert test is not None and test.balanced_accuracy is not None and reliability is not None
    low, high = test.balanced_accuracy_ci or []
    assert row.split() == [version, f"{manifest.created_at:%Y-%m-%d}",
                           f"{manifest.created_at:%H:%M}", "tiny",
                           f"{test.balanced_accuracy:.3f}", f"({low:.3f}-{high:.3f})",
                           "yes" if reliability.better_than_chance else "no"]
    assert json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)["active"] is None

    # a tiny version may not beat chance: --force confirms it either way
    activated = runner.invoke(app, ["models", "activate", version, "--force"])
    assert activated.exit_code == 0, activated.output
    assert activated.stdout.startswith(f"model version {version} is active")
    pointer = LocalRegistry(models).active()
    assert pointer is not None and pointer.version == version
    assert runner.invoke(app, ["models", "list"]).stdout.splitlines()[1].split()[-1] == "*"
    listing = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert listing["active"] == version
    assert [entry["version"] for entry in listing["versions"]] == [version]
    assert listing["versions"][0]["metrics"]["test"]["balanced_accuracy"] == \
        test.balanced_accuracy


def _tested(interval: list[float]) -> dict[str, Metrics]:
    return {"metrics": Metrics(test=SplitMetrics(images=30, balanced_accuracy_ci=interval))}


def test_a_version_at_chance_is_activated_only_with_force_and_the_trail_says_so(
    cli: CliRunner, settings: Settings
) -> None:
    from cxr_cli import app

    registry = LocalRegistry(settings.models_dir)
    proven = publish_random(registry, seed=3, extra=_tested([0.5, 0.9]))
    unproven = publish_random(registry, seed=4, extra=_tested([0.2, 0.6]))

    assert cli.invoke(app, ["models", "activate", proven]).exit_code == 0
    message = one_line_error(cli.invoke(app, ["models", "activate", unproven]),
                             "confirmation_required")
    assert "includes chance" in message and f"cxr models activate {unproven} --force" in message
    pointer = registry.active()
    assert pointer is not None and pointer.version == proven  # unchanged

    forced = cli.invoke(app, ["models", "activate", unproven, "--force"])
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.startswith(f"model version {unproven} is active (forced: ")
    pointer = registry.active()
    assert pointer is not None and pointer.version == unproven

    trail = open_audit_store(settings).query(AuditQuery(action="activate", actor="cli"))
    assert [(r.target, r.outcome, r.error) for r in reversed(trail)] == [
        (proven, "ok", None), (unproven, "refused", "confirmation_required"),
        (unproven, "ok", None)]
    assert trail[0].detail is not None and trail[0].detail.startswith("forced: ")
    assert "includes chance" in trail[0].detail and trail[-1].detail is None
