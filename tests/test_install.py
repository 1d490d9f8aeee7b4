"""The project as a user installs it: a copy outside the checkout, and the Makefile's targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.env import REPO

SETTINGS_PATHS = """
import json, shared
from shared.config import Settings
s = Settings()
print(json.dumps({"package": shared.__file__, "models": str(s.models_dir),
                  "data": str(s.data_dir), "state": str(s.state_dir)}))
"""


def test_an_installed_copy_keeps_its_files_where_it_is_started(tmp_path: Path) -> None:
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    # A real (not editable) install of this tree; the build needs nothing from an index.
    # uv where the Makefile put it (pip takes four times as long), pip otherwise.
    uv = Path(sys.executable).parent / "uv"
    installer = [uv, "pip"] if uv.exists() else [sys.executable, "-m", "pip"]
    subprocess.run([*installer, "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", site, REPO], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", SETTINGS_PATHS], cwd=work, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    found = json.loads(out.splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site)
    assert found["models"] == str(work / "models")
    assert found["data"] == str(work / "var" / "data")
    assert found["state"] == str(work / "var" / "state")
    version = subprocess.run([site / "bin" / "cxr", "--version"], cwd=work, env=env, text=True,
                             capture_output=True, timeout=60)
    assert version.stdout.strip() == "cxr-service 0.1.0", version.stderr


def test_make_run_installs_what_running_needs_and_make_test_the_test_tools(
        tmp_path: Path) -> None:
    def planned(target: str) -> str:
        # -n: print the commands for a fresh environment without running them
        return subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=REPO,
                              check=True, capture_output=True, text=True).stdout

    run, test = planned("run"), planned("test")
    for plan in (run, test):
        assert "uv sync --locked" in plan
        assert "--extra api --extra worker" in plan
    assert "--extra dev" not in run
    assert "--extra dev" in test
    # the serving frameworks of bench/peers.py: beside the tests, never beside the service
    assert "--extra bench" not in run
    assert "--extra bench" in test
