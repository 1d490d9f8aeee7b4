"""The suite's own rules: a test whose real data is absent skips on a developer's machine and
fails in CI (CXR_TEST_REQUIRE_SERVICES=1), where no test may hide behind a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.env import REPO

NEEDS_ABSENT_DATA = '''
from pathlib import Path

from tests.helpers.env import real_data


def test_needs_real_data(tmp_path: Path) -> None:
    real_data(tmp_path / "no-such-data")
'''


def _run_alone(tmp_path: Path, require: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's options
    (tmp_path / "test_needs_data.py").write_text(NEEDS_ABSENT_DATA)
    # No plugins: schemathesis and the rest would take most of the run to load.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "CXR_TEST_REQUIRE_SERVICES": "1" if require else "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rfs", "test_needs_data.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("require", [False, True], ids=["developer", "ci"])
def test_absent_real_data_skips_or_fails(tmp_path: Path, require: bool) -> None:
    run = _run_alone(tmp_path, require)
    assert "real X-rays not found at" in run.stdout, run.stdout + run.stderr
    if require:
        assert run.returncode == 1 and "1 failed" in run.stdout
        assert "CXR_TEST_REQUIRE_SERVICES=1 requires it" in run.stdout
    else:
        assert run.returncode == 0 and "1 skipped" in run.stdout
