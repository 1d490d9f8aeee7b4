"""Running `cxr` in tests: in this process (each process imports TensorFlow again), and the
shape every failure must have."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.helpers.env import REPO


def run_cxr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`cxr` as a user runs it, a process of its own."""
    return subprocess.run([sys.executable, "-m", "cxr_cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def one_line_error(result: Any, code: str, exit_code: int = 2) -> str:
    """The message of a failure that ended as it must: nothing on stdout, one line
    `error: <code>: <message>` on stderr, no traceback."""
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert result.stdout == ""
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), result.stderr
    return str(lines[0].removeprefix(f"error: {code}: "))
