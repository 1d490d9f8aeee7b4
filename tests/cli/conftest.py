"""`cxr` in this process, on the test's settings."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shared.config import Settings


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner of `cxr` whose commands read the test's settings (an empty registry)."""
    from cxr_cli import runtime

    monkeypatch.setattr(runtime, "get_settings", lambda: settings)
    return CliRunner()
