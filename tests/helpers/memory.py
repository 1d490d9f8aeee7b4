"""The peak memory of decoding one very large image, measured in a fresh process."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.env import REPO

# Decodes one 7000x7000 image (a 60 KB PNG, a 560 KB JPEG) for a 224 px model with or
# without reduction; prints the growth of the process's peak resident memory (VmHWM: the
# file's own 8-bit copy was made before) in MiB.
_DECODE_ONE = """
import io, sys
from PIL import Image
from shared.ml.preprocessing import PreprocessOptions, load_pixels
buffer = io.BytesIO()
Image.new("L", (7000, 7000), 90).save(buffer, format=sys.argv[1])
def peak():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1])
before = peak()
load_pixels(buffer.getvalue(), 224, options=PreprocessOptions(reduce_large=sys.argv[2] == "1"))
print((peak() - before) // 1024)
"""


def decode_peak_growth_mib(fmt: str, reduce: bool) -> int:
    """Linux only (reads /proc/self/status)."""
    done = subprocess.run([sys.executable, "-c", _DECODE_ONE, fmt, str(int(reduce))], cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=120)
    return int(done.stdout.strip())
