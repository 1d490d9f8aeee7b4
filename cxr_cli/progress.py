"""Training's progress and the steps after it on the console: rich progress bars with an ETA
on a terminal, plain lines (one an epoch, one a finished step) anywhere else."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from shared.schemas import EpochMetrics, JobProgress

if TYPE_CHECKING:
    from worker.context import BatchProgress


def duration(seconds: float) -> str:
    """``12.3 s``, ``1 min 40 s``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def figures(metrics: EpochMetrics | None, before_s: float = 0.0) -> str:
    """An epoch's metrics as ``name value`` pairs, then its own time and the training's so
    far (``elapsed_s`` counts from the start of training; ``before_s``: what it was at the
    end of the epoch before)."""
    if metrics is None:
        return ""
    values = metrics.model_dump(exclude_none=True)
    elapsed = values.pop("elapsed_s", None)
    parts = [f"{name} {value:.4f}" for name, value in values.items()]
    if elapsed is not None:
        parts.append(f"{duration(max(elapsed - before_s, 0.0))} this epoch, "
                     f"{duration(elapsed)} in all")
    return ", ".join(parts)


def _running(progress: BatchProgress) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in
                     (("loss", progress.loss), ("accuracy", progress.accuracy))
                     if value is not None)


class ConsoleReporter:
    """The worker's Reporter for a run in this process: shows, never cancels (Ctrl-C
    stops the command). A finished epoch or step leaves one line, the same on a terminal
    (above the bars) and in a pipe; the bars show only what is running."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[figures]}"), TimeRemainingColumn(),
            console=self.console, disable=not self.live)
        self.epoch: tuple[int, TaskID] | None = None
        self.step: tuple[str, TaskID, float] | None = None
        self.elapsed_s = 0.0  # the training's time at the end of the last epoch

    def __enter__(self) -> ConsoleReporter:
        self.bars.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._end_phase()
        self.bars.stop()

    def batch_end(self, progress: BatchProgress) -> None:
        if not self.live:
            return  # a pipe gets the epoch's line only
        if self.epoch is None or self.epoch[0] != progress.epoch:
            task = self.bars.add_task(
                f"epoch {progress.epoch}/{progress.epochs} ({progress.phase})",
                total=progress.batches, figures="")
            self.epoch = (progress.epoch, task)
        self.bars.update(self.epoch[1], completed=progress.batch, figures=_running(progress))

    def epoch_end(self, progress: JobProgress) -> bool:
        if self.epoch is not None:
            self.bars.remove_task(self.epoch[1])
            self.epoch = None
        self._line(f"epoch {progress.epoch}/{progress.epochs} ({progress.phase}): "
                   f"{figures(progress.last, self.elapsed_s)}")
        if progress.last is not None and progress.last.elapsed_s is not None:
            self.elapsed_s = progress.last.elapsed_s
        return False

    def phase(self, name: str, done: int, total: int) -> None:
        if self.step is None or self.step[0] != name:
            self._end_phase()
            task = self.bars.add_task(name, total=total, figures="")
            self.step = (name, task, time.monotonic())
        self.bars.update(self.step[1], completed=min(done, total))
        if done >= total:
            self._end_phase()

    def cancel_requested(self) -> bool:
        return False

    def _end_phase(self) -> None:
        """The current step is over (or the next began): its bar gives way to its line."""
        if self.step is None:
            return
        name, task, started = self.step
        self.step = None
        shown = next(t for t in self.bars.tasks if t.id == task)
        self.bars.remove_task(task)
        self._line(f"{name}: {shown.completed:g}/{shown.total or 0:g} in "
                   f"{time.monotonic() - started:.1f} s")

    def _line(self, text: str) -> None:
        if self.live:  # above the bars, which stay at the bottom
            self.console.print(text, markup=False, soft_wrap=True)
        else:
            typer.echo(text, err=True)
