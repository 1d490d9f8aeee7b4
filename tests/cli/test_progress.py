"""Progress on a terminal: bars, then a line for each finished epoch (its own time and the
training's so far) and step. (Plain progress lines and a quiet stderr are checked on a real
`cxr train` in test_training.py.)"""

from __future__ import annotations

import io
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
    assert ("epoch 1/2 (full): loss 1.2500, accuracy 0.5000, val_loss 1.5000, 3.2 s this "
            "epoch, 3.2 s in all") in lines
    assert any(re.fullmatch(r"evaluation: 36/36 in [\d.]+ s", line) for line in lines)
    assert any(re.fullmatch(r"int8 copy: 0/10 in [\d.]+ s", line) for line in lines)


def test_an_epoch_line_tells_its_own_time_from_the_training_s(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cxr_cli.progress import ConsoleReporter, duration

    assert [duration(s) for s in (3.25, 59.9, 100.4, 7325)] == [
        "3.2 s", "59.9 s", "1 min 40 s", "2 h 02 min"]
    piped = Console(file=io.StringIO(), force_terminal=False)
    with ConsoleReporter(piped) as reporter:  # a pipe: a line an epoch, on stderr
        for epoch, elapsed in ((1, 88.0), (2, 100.0)):
            reporter.epoch_end(JobProgress(epoch=epoch, epochs=2, phase="head",
                                           last=EpochMetrics(loss=1.0, elapsed_s=elapsed)))
    assert capsys.readouterr().err.splitlines() == [
        "epoch 1/2 (head): loss 1.0000, 1 min 28 s this epoch, 1 min 28 s in all",
        "epoch 2/2 (head): loss 1.0000, 12.0 s this epoch, 1 min 40 s in all"]
