"""Memory freed after a large image handed back to the system (glibc's ``malloc_trim``).

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which
blocks below it come from per-thread heaps that keep what is freed. A large image decoded in
one thread and then another (Pillow allocates in 16 MiB blocks) so leaves hundreds of
megabytes resident per thread, and the peak grows with the number of threads that decoded,
however few decode at once. Trimming after each large image returns it; fixing the threshold
instead would also map and fault in every large tensor of every forward pass.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from typing import Any


@functools.cache
def _libc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_freed_memory() -> bool:
    """Return the free memory of every heap to the system; False where it cannot (not glibc)."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True
