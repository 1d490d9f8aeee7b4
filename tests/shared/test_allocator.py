import platform
import subprocess
import sys

import pytest

# Decodes one large PNG at a time, once in each of eight threads (a thread's second decode
# would reuse what its first kept), releasing freed memory after each when told to; prints
# the growth of the peak resident memory in MiB.
_DECODE_IN_TURNS = """
import io, sys, threading
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from shared.allocator import release_freed_memory
from shared.ml.preprocessing import load_pixels
buffer = io.BytesIO()
Image.new("L", (5000, 5000), 90).save(buffer, format="PNG")
turn = threading.Lock()
def peak():  # VmHWM: ru_maxrss would include the forking parent's peak
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1])
def decode(_):
    with turn:
        load_pixels(buffer.getvalue(), 32)
        if sys.argv[1] == "release":
            assert release_freed_memory()
before = peak()
with ThreadPoolExecutor(8) as pool:
    list(pool.map(decode, range(8)))
print((peak() - before) // 1024)
"""


def _peak_growth_mib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _DECODE_IN_TURNS, mode], capture_output=True,
                          text=True, check=True, timeout=120)
    return int(done.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim only")
def test_images_decoded_in_turn_by_many_threads_cost_one_image_of_peak_memory() -> None:
    image_mib = 5000 * 5000 * 4 / 2**20  # one float32 copy: 95 MiB
    kept = _peak_growth_mib("keep")
    released = _peak_growth_mib("release")
    assert released < 3 * image_mib, released
    assert kept > released + 2 * image_mib, (kept, released)
