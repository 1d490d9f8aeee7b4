"""`cxr key`, `cxr --version`, and the logs of `cxr serve` on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from dotenv import dotenv_values
from typer.testing import CliRunner

from tests.helpers.cli import one_line_error
from tests.helpers.env import REPO
from tests.helpers.services import free_port


def test_a_new_key_is_printed_once_with_the_lines_that_admit_it_in_a_shell_and_in_dotenv(
    tmp_path: Path,
) -> None:
    from api.plumbing.auth import match_key
    from cxr_cli import app
    from shared.config import Settings

    name = "o'ps $HOME"  # a quote, and what a shell or compose would expand
    made = CliRunner().invoke(app, ["key", "--name", name, "--role", "labeler"])
    assert made.exit_code == 0, made.output
    key = made.stdout.split("shown only now): ")[1].split()[0]
    lines = made.stdout.splitlines()
    (shell,) = [ln for ln in lines if ln.startswith("export CXR_API_KEYS=")]
    (dotenv,) = [ln for ln in lines if ln.startswith("CXR_API_KEYS=")]
    assert "for a shell" in lines[lines.index(shell) - 1]
    assert "docker compose" in lines[lines.index(dotenv) - 1] and ".env" in lines[
        lines.index(dotenv) - 1]
    # the export line as a user pastes it into a shell; the other as a line of .env
    pasted = subprocess.run(["bash", "-c", f'{shell}; printf %s "$CXR_API_KEYS"'],
                            check=True, capture_output=True, text=True).stdout
    (tmp_path / ".env").write_text(f"# made by cxr key\n{dotenv}\n")
    read = dotenv_values(tmp_path / ".env")["CXR_API_KEYS"]
    assert pasted == read
    settings = Settings(api_keys=json.loads(pasted))
    assert key not in pasted
    found = match_key(key, settings.api_keys)
    assert found is not None and (found.name, found.role) == (name, "labeler")
    # pydantic-settings reads that .env file too (a `cxr` run beside it)
    from_file = Settings(_env_file=tmp_path / ".env")
    assert match_key(key, from_file.api_keys) == found
    assert "--role" in one_line_error(CliRunner().invoke(app, ["key", "--role", "root"]),
                                      "usage_error")


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    from cxr_cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cxr-service {version('cxr-service')}"


def test_json_logs_on_a_terminal_hold_no_colour_codes(tmp_path: Path) -> None:
    """uvicorn colours some of its messages when it sees a terminal; a JSON line never."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update({"CXR_MODELS_DIR": str(tmp_path / "models"), "CXR_LOG_FORMAT": "json",
                "CXR_STATE_DIR": str(tmp_path / "state"), "CXR_PORT": str(free_port())})
    main, side = pty.openpty()
    served = subprocess.Popen([sys.executable, "-m", "cxr_cli", "serve"], cwd=REPO, env=env,
                              stdin=side, stdout=side, stderr=side, start_new_session=True)
    os.close(side)
    written = b""
    try:
        deadline = time.monotonic() + 60
        while b"Uvicorn running" not in written and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                written += os.read(main, 65536)
    finally:
        served.terminate()
        served.wait(timeout=30)
        os.close(main)
    text = written.decode(errors="replace")
    assert "Uvicorn running" in text, text
    assert "\x1b" not in text and "\\u001b" not in text, text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all("color_message" not in record for record in records)
