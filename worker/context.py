"""What one job carries through the worker's layers: its settings and limits, where it
reports, where it keeps its checkpoint, and its registry."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from shared.config import Settings
from shared.errors import JobCancelled
from shared.registry import Registry, open_registry
from shared.schemas import JobProgress


@dataclass(frozen=True)
class BatchProgress:
    """One training batch done: where it stands in its epoch, with the epoch's running loss
    and accuracy (Keras' averages over the batches so far)."""

    epoch: int  # from 1, counted on across phases as JobProgress.epoch is
    epochs: int
    phase: str
    batch: int  # batches done in this epoch
    batches: int | None  # the epoch's batches; None when Keras does not know them
    loss: float | None = None
    accuracy: float | None = None


class PhaseReporter(Protocol):
    """Where the steps after training (evaluation, calibration, exports) report how far
    they are, and learn that the job should stop."""

    def phase(self, name: str, done: int, total: int) -> None:
        """``done`` of ``total`` steps of the named phase; done is 0 as the phase starts."""
        ...

    def cancel_requested(self) -> bool:
        """Whether someone asked the job to stop; cheap enough to ask after every batch."""
        ...


class Reporter(PhaseReporter, Protocol):
    """Where training reports progress and learns that it should stop."""

    def batch_end(self, progress: BatchProgress) -> None:
        """Record a training batch; called after every one, so it must be cheap."""
        ...

    def epoch_end(self, progress: JobProgress) -> bool:
        """Record an epoch; True when the job should stop."""
        ...


class Steps:
    """One phase's steps, reported as they are done; to nobody without a reporter.

    A job asked to stop stops between two steps, or before the first, with JobCancelled;
    never after the last, whose work (a version published, say) a late cancel cannot undo.
    """

    def __init__(self, reporter: PhaseReporter | None, name: str, total: int) -> None:
        self.reporter, self.name, self.total, self.done = reporter, name, total, 0
        self.advance(0)

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        if self.reporter is None:
            return
        self.reporter.phase(self.name, self.done, self.total)
        if self.done < self.total and self.reporter.cancel_requested():
            raise JobCancelled(f"cancelled during {self.name}")


@dataclass(frozen=True)
class JobContext:
    """One job's settings, reporter, checkpoint folder and registry."""

    settings: Settings
    reporter: Reporter
    # None: no checkpoint (a run that cannot be taken over, as from the CLI)
    checkpoint_dir: Path | None = None

    @cached_property
    def registry(self) -> Registry:
        """The settings' registry, opened when the job first needs it, once."""
        return open_registry(self.settings)

    @property
    def max_pixels(self) -> int:
        """The largest image, in pixels, the job decodes (``CXR_MAX_IMAGE_PIXELS``)."""
        return self.settings.max_image_pixels
