"""The worker's metrics folder: what workers that are gone left behind is removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from worker.runner.job_metrics import _sweep


def test_folders_of_gone_workers_on_this_host_are_swept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    folders = {name: tmp_path / name for name in
               (f"host-{dead_pid}", f"host-{os.getpid()}", f"other-{dead_pid}")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"\0")
    _sweep(tmp_path, "host")
    assert not folders[f"host-{dead_pid}"].exists()
    assert folders[f"host-{os.getpid()}"].exists()  # alive
    assert folders[f"other-{dead_pid}"].exists()  # another host's: not ours to judge
    _sweep(tmp_path / "absent", "host")
