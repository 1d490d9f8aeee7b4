"""A phase reporter for tests of cancellation: it records each phase's progress and says the
job should stop once its phase has done so many steps."""

from __future__ import annotations


class CancelAfter:
    """Asked to stop once the current phase has done ``steps`` steps."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.phases: list[tuple[str, int, int]] = []

    def phase(self, name: str, done: int, total: int) -> None:
        self.phases.append((name, done, total))

    def cancel_requested(self) -> bool:
        return bool(self.phases) and self.phases[-1][1] >= self.steps
