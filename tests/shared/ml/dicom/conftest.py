"""The radiograph whose pixels the DICOM tests store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.env import sample_files


@pytest.fixture(scope="module")
def png(radiography_root: Path) -> bytes:
    return sample_files(radiography_root, 1)["COVID"][0].read_bytes()
