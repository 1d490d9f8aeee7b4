"""Reporters for tests of cancellation and crashes: one says the job should stop once its
phase has done so many steps, one crashes the training after so many epochs."""

from __future__ import annotations

from shared.schemas import JobProgress
from tests.helpers.versions import Recorder


class CancelAfter:
    """Asked to stop once the current phase has done ``steps`` steps."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.phases: list[tuple[str, int, int]] = []

    def phase(self, name: str, done: int, total: int) -> None:
        self.phases.append((name, done, total))

    def cancel_requested(self) -> bool:
        return bool(self.phases) and self.phases[-1][1] >= self.steps


class Crash(Exception):
    """A worker process dying mid-training, as a test raises it."""


class CrashAfter(Recorder):
    """Records progress, and crashes once ``epochs`` epochs are done (a checkpoint kept)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.crash_after = epochs

    def epoch_end(self, progress: JobProgress) -> bool:
        super().epoch_end(progress)
        if len(self.progress) == self.crash_after:
            raise Crash
        return False
