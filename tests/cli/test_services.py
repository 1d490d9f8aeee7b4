"""`cxr key` and `cxr --version`."""

from __future__ import annotations

import json
import subprocess

from typer.testing import CliRunner

from tests.helpers.cli import one_line_error


def test_a_new_key_is_printed_once_with_the_settings_entry_that_admits_it() -> None:
    from api.plumbing.auth import match_key
    from cxr_cli import app
    from shared.config import Settings

    made = CliRunner().invoke(app, ["key", "--name", "o'ps", "--role", "labeler"])
    assert made.exit_code == 0, made.output
    key = made.stdout.split("shown only now): ")[1].split()[0]
    (line,) = [ln for ln in made.stdout.splitlines() if ln.startswith("export CXR_API_KEYS=")]
    # the line as a user pastes it into a shell
    entry = subprocess.run(["bash", "-c", f'{line}; printf %s "$CXR_API_KEYS"'], check=True,
                           capture_output=True, text=True).stdout
    settings = Settings(api_keys=json.loads(entry))
    assert key not in entry
    found = match_key(key, settings.api_keys)
    assert found is not None and (found.name, found.role) == ("o'ps", "labeler")
    assert "--role" in one_line_error(CliRunner().invoke(app, ["key", "--role", "root"]),
                                      "usage_error")


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    from cxr_cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cxr-service {version('cxr-service')}"
