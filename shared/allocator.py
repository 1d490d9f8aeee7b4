"""The C allocator told to hand large blocks back to the system as soon as they are freed.

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which
blocks below it come from per-thread heaps that are not returned. A large image decoded in
one thread and then another (Pillow allocates in 16 MiB blocks) so leaves hundreds of
megabytes resident per thread, and the peak grows with the number of threads that decoded,
however few decode at once. A fixed threshold keeps large blocks mapped and unmapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def release_large_blocks(threshold_bytes: int) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes`` (0 leaves it alone); True when set.

    An operator's own MALLOC_MMAP_THRESHOLD_ wins, and other C libraries are left as they are.
    """
    if threshold_bytes <= 0 or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold_bytes)) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused", threshold_bytes)
        return False
    return True
