"""Progress on a terminal, and TensorFlow's start without its C++ lines. (Plain progress
lines and a quiet stderr are checked on a real `cxr train` in test_training.py.)"""

from __future__ import annotations

import io
import os
import re

import pytest
from rich.console import Console

from shared.schemas import EpochMetrics, JobProgress
from worker.context import BatchProgress


def test_a_terminal_shows_bars_with_an_eta_and_a_line_for_each_finished_step() -> None:
    from cxr_cli.progress import ConsoleReporter

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with ConsoleReporter(console) as reporter:
        for batch in (1, 2, 3):
            reporter.batch_end(BatchProgress(epoch=1, epochs=2, phase="full", batch=batch,
                                             batches=3, loss=1.25, accuracy=0.5))
            reporter.bars.refresh()
        reporter.epoch_end(JobProgress(epoch=1, epochs=2, phase="full", last=EpochMetrics(
            loss=1.25, accuracy=0.5, val_loss=1.5, elapsed_s=3.25)))
        for done in range(0, 37, 12):
            reporter.phase("evaluation", done, 36)
            reporter.bars.refresh()
        reporter.phase("int8 copy", 0, 10)  # stopped early: ends when the run ends
    shown = screen.getvalue()
    assert re.search(r"epoch 1/2 \(full\) ━+\S* +2/3 loss 1\.2500, accuracy 0\.5000 "
                     r"+\d:\d\d:\d\d", shown)
    assert re.search(r"evaluation ━+\S* +24/36 +\d:\d\d:\d\d", shown)
    lines = [line.strip() for line in re.split(r"[\r\n]|\x1b\[[0-9;]*[A-Za-z]", shown)]
    assert "epoch 1/2 (full): loss 1.2500, accuracy 0.5000, val_loss 1.5000, 3.2 s" in lines
    assert any(re.fullmatch(r"evaluation: 36/36 in [\d.]+ s", line) for line in lines)
    assert any(re.fullmatch(r"int8 copy: 0/10 in [\d.]+ s", line) for line in lines)


def test_tensorflow_starts_quietly_unless_asked(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from cxr_cli import runtime

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    runtime.start_tensorflow(verbose=True)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    runtime.start_tensorflow(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    runtime.start_tensorflow(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # the user's own choice stands

    # what TensorFlow's libraries print as they load (there is no variable to quiet it)
    with runtime.native_stderr_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n"
                    b"I0000 00:00:1796391040.601880   11510 cudart_stub.cc:31] Could not find "
                    b"cuda drivers on your machine, GPU will not be used.\n"
                    b"E0000 00:00:1796391060.628813   11510 cuda_platform.cc:52] a real error\n"
                    b"something else\n")
    assert capfd.readouterr().err.splitlines() == [
        "E0000 00:00:1796391060.628813   11510 cuda_platform.cc:52] a real error",
        "something else"]
