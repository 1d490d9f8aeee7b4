"""`cxr models list` and `cxr models activate` on a real registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.config import Settings
from shared.registry.base import ACTIVE_FILE
from shared.registry.local import LocalRegistry
from tests.helpers.versions import Trained


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

    activated = runner.invoke(app, ["models", "activate", version])
    assert activated.exit_code == 0, activated.output
    assert activated.stdout.strip() == f"model version {version} is active"
    pointer = LocalRegistry(models).active()
    assert pointer is not None and pointer.version == version
    assert runner.invoke(app, ["models", "list"]).stdout.splitlines()[1].split()[-1] == "*"
    listing = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert listing["active"] == version
    assert [entry["version"] for entry in listing["versions"]] == [version]
    assert listing["versions"][0]["metrics"]["test"]["balanced_accuracy"] == \
        test.balanced_accuracy
