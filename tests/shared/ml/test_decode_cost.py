"""``decode_cost``: what decoding and preparing a file will hold, from its true header, never
less than it holds and not much more; nothing for what decoding refuses from its header."""

from __future__ import annotations

import io
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.ml.decode_cost import decode_cost
from shared.ml.preprocessing import PreprocessOptions
from tests.helpers.dicom import deflated_dicom, encapsulated_dicom, make_dicom
from tests.helpers.env import REPO

MiB = 2**20
FLOOR = PreprocessOptions(reduce_large=True).decode_floor(224)  # 672


def _encoded(image: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _picture(height: int, width: int, top: int = 255) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    values: np.ndarray = (x * 7 + y * 3) % (top + 1)
    return values.astype(np.uint8 if top < 256 else np.uint16)


@pytest.mark.parametrize("data", [
    b"", b"patient notes, not an image\n" * 10, b"\x89PNG\r\n\x1a\n",
    _encoded(Image.new("L", (50, 30)), "GIF"),
    _encoded(Image.new("L", (3000, 2000))),  # over the limit below
    make_dicom(np.zeros((3000, 2000), np.uint8), 8)[:-10],  # over the limit below
    b"\0" * 128 + b"DICM",
    encapsulated_dicom(_encoded(Image.new("L", (200, 300)), "JPEG"), 16, 16),
], ids=["empty", "text", "png-signature", "gif", "png-too-large", "dicom-too-large",
        "dicom-marker-only", "frame-larger-than-header"])
def test_what_decoding_refuses_from_its_header_costs_nothing(data: bytes) -> None:
    assert decode_cost(data, 0, max_pixels=5_000_000) == 0


def test_the_cost_is_the_header_s_not_the_file_s() -> None:
    tiny = _encoded(Image.new("L", (4000, 4000), 0))
    assert len(tiny) < 100_000
    # the float image and the resize's float copy of it, at least
    assert decode_cost(tiny) >= 8 * 4000 * 4000


def test_the_cost_follows_what_decoding_holds() -> None:
    gray = _picture(1500, 1200)
    png = _encoded(Image.fromarray(gray))
    rgb = _encoded(Image.merge("RGB", [Image.fromarray(gray)] * 3))
    stored = _picture(1500, 1200, 4095)
    native, deflated = make_dicom(stored, 12), deflated_dicom(stored, 12)
    jpeg = _encoded(Image.fromarray(gray), "JPEG")
    progressive = _encoded(Image.fromarray(gray), "JPEG", progressive=True)
    in_dicom = encapsulated_dicom(jpeg, 1500, 1200)
    assert decode_cost(png) == decode_cost(jpeg) == decode_cost(native)  # all float at last
    assert decode_cost(rgb) > decode_cost(png)
    # reduced before it becomes float: a fraction
    assert decode_cost(png, 300) < decode_cost(png) / 3
    assert decode_cost(jpeg, 300) < decode_cost(png, 300)  # decoded at 1/4 scale
    # ... except what a progressive JPEG keeps at full size: its coefficients
    assert decode_cost(progressive, 300) > 2 * 1500 * 1200
    # the inflated dataset, a decoded frame held beside the float image
    assert decode_cost(deflated, 300) >= decode_cost(native, 300) + stored.nbytes
    assert decode_cost(in_dicom, 300) > 4 * gray.nbytes
    assert decode_cost(png, equalize="clahe") > 5 * decode_cost(png)
    # a side beyond MAX_SIDE costs what MAX_SIDE does
    strip = _encoded(Image.new("L", (400_000, 1)))
    assert decode_cost(strip) < decode_cost(_encoded(Image.new("L", (8192, 1)))) + 4 * 400_000


# Decodes and prepares one file in a fresh process, after a small one of its kind (imports
# and decoders' set-up); prints the growth of peak resident memory (VmHWM, reset) in bytes.
_MEASURE = """
import sys
from shared.ml.preprocessing import decode_image, gray_to_pixels, prepare_gray
from shared.ml.preprocessing import PreprocessOptions
def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key))
    return int(line.split()[1]) * 1024
floor, options = int(sys.argv[3]), PreprocessOptions(reduce_large=True)
def run(path):
    data = open(path, "rb").read()
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS:")
    gray_to_pixels(prepare_gray(decode_image(data, 10**8, floor).gray, options), 224)
    return status("VmHWM:") - before
run(sys.argv[2])
print(run(sys.argv[1]))
"""


def _peak_growth(tmp_path: Path, data: bytes, small: bytes, floor: int) -> int:
    (tmp_path / "image").write_bytes(data)
    (tmp_path / "small").write_bytes(small)
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / "image"),
                           str(tmp_path / "small"), str(floor)], cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=120)
    return int(done.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/status")
@pytest.mark.parametrize(("kind", "floor"), [("png", 0), ("png", FLOOR), ("deflated", 0),
                                             ("deflated", FLOOR), ("jpeg-in-dicom", FLOOR)])
def test_the_cost_covers_the_measured_peak_and_not_twice_it(kind: str, floor: int,
                                                           tmp_path: Path) -> None:
    def make(side: int) -> bytes:
        if kind == "png":
            return _encoded(Image.fromarray(_picture(side, side)))
        if kind == "deflated":
            return deflated_dicom(_picture(side, side, 4095), 12)
        jpeg = _encoded(Image.fromarray(_picture(side, side)), "JPEG")
        return encapsulated_dicom(jpeg, side, side)

    data = make(3000)
    measured = _peak_growth(tmp_path, data, make(64), floor)
    estimate = decode_cost(data, floor)
    assert measured <= estimate <= 2 * measured, (measured / MiB, estimate / MiB)
