"""What one job carries through the worker's layers: its settings, where it reports, where
it keeps its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shared.config import Settings
from shared.schemas import JobProgress


class Reporter(Protocol):
    """Where training reports progress and learns that it should stop."""

    def epoch_end(self, progress: JobProgress) -> bool:
        """Record an epoch; True when the job should stop."""
        ...

    def cancel_requested(self) -> bool:
        """Whether someone asked the job to stop; cheap enough to ask after every batch."""
        ...


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    reporter: Reporter
    # None: no checkpoint (a run that cannot be taken over, as from the CLI)
    checkpoint_dir: Path | None = None

    @property
    def max_pixels(self) -> int:
        return self.settings.max_image_pixels
