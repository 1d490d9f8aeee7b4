"""A bound on the pixels being decoded and prepared at once, across all requests.

One image's limit (CXR_MAX_IMAGE_PIXELS) does not bound many at once: a PNG of a hundred
kilobytes may declare 49 M pixels and take about half a gigabyte while it is decoded, so a
few such uploads together could take the API's memory with them. Each request holds its
image's declared pixels while it is decoded and prepared; one that would exceed the budget
waits for others to finish, and gets 503 with Retry-After when that takes too long. After a
large one, what it freed goes back to the system (shared/allocator.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shared.allocator import release_freed_memory
from shared.errors import ServiceBusy


class PixelBudget:
    def __init__(self, capacity: int, wait_s: float, release_after_pixels: int = 0) -> None:
        self.capacity, self.wait_s = capacity, wait_s
        self.release_after_pixels = release_after_pixels
        self._used = 0
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget (an image larger than all of it waits for it all)."""
        need = max(1, min(pixels, self.capacity))
        with self._changed:
            if not self._changed.wait_for(lambda: self._used + need <= self.capacity,
                                          timeout=self.wait_s):
                raise ServiceBusy(f"too many large images are being decoded at once; retry "
                                  f"in a few seconds (CXR_DECODE_PIXEL_BUDGET {self.capacity})")
            self._used += need
        try:
            yield
        finally:
            with self._changed:
                self._used -= need
                self._changed.notify_all()
            if self.release_after_pixels and pixels >= self.release_after_pixels:
                release_freed_memory()
