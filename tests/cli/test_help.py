"""Every command's --help at 80 columns, piped as a user pipes it into less or grep: each
option's name whole (to read and to copy), no line wider than the terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import typer
from typer.core import TyperGroup

from tests.helpers.env import REPO


def _commands(group: TyperGroup, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every command and group under ``group``, by the words that call it."""
    found: dict[tuple[str, ...], object] = {path: group}
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            found.update(_commands(command, (*path, name)))
        else:
            found[(*path, name)] = command
    return found


def test_every_option_name_is_whole_at_80_columns_in_a_pipe() -> None:
    from cxr_cli import app

    commands = _commands(typer.main.get_command(app))  # type: ignore[arg-type]
    assert ("train",) in commands and ("models", "activate") in commands
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    env.pop("LINES", None)
    runs = {path: subprocess.Popen([sys.executable, "-m", "cxr_cli", *path, "--help"],
                                   cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            for path in commands}
    for path, run in runs.items():
        shown, errors = run.communicate(timeout=120)
        assert run.returncode == 0 and not errors, (path, errors)
        assert "…" not in shown, shown  # rich's cut
        assert max(len(line) for line in shown.splitlines()) <= 80, shown
        command = commands[path]
        names = [name for param in command.params  # type: ignore[attr-defined]
                 if not getattr(param, "hidden", False)
                 for name in (*param.opts, *param.secondary_opts) if name.startswith("-")]
        for name in names:
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", shown), (path, name)
        # an option named in a help text is never broken at its hyphens either
        assert not re.search(r"--[\w-]*-\n", shown), shown
