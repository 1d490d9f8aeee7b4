"""Damaged compressed frames are refused, whatever the decoder makes of them: never an
exception other than the service's own, never a process that dies (GDCM may abort on a
damaged JPEG: it decodes only what no other plugin can), never a Rust panic let through."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.ml.dicom.plugins import plugin_for
from tests.helpers.dicom import encapsulated_dicom

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"


@pytest.mark.parametrize(("syntax", "plugin"), [
    (JPEG_BASELINE, "pillow"), (JPEG_2000, "pylibjpeg"), (RLE, "pylibjpeg")])
def test_frames_go_to_the_decoders_that_fail_safely(syntax: str, plugin: str) -> None:
    assert plugin_for(syntax) == plugin


# Each frame is damaged a few bytes at a time, anywhere (its tables and markers too), and
# encapsulated under a header that matches it; decoding must end in a CxrError or an image,
# in a process that lives to say so.
_DAMAGE_AND_DECODE = textwrap.dedent("""
    import random, sys, warnings
    warnings.simplefilter("ignore")
    from shared.errors import CxrError
    from shared.ml.preprocessing import decode_image
    from tests.helpers.dicom import encapsulated_dicom
    frames = [(open(path, "rb").read(), syntax) for path, syntax in zip(*[iter(sys.argv[1:])] * 2)]
    random.seed(0)
    unexpected = 0
    for k in range(1500):
        frame, syntax = frames[k % len(frames)]
        data = bytearray(frame)
        for _ in range(random.randint(1, 4)):
            i = random.randrange(2, len(data))
            data[i:i + 2] = random.randbytes(2)
        try:
            decode_image(encapsulated_dicom(bytes(data), 64, 48, syntax=syntax), 5_000_000)
        except CxrError:
            pass
        except BaseException as exc:
            unexpected += 1
            print(type(exc).__name__, exc)
    print("unexpected", unexpected)
""")


def test_damaged_frames_are_refused_and_the_process_lives(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = (rng.random((64, 48)) * 255).astype(np.uint8)
    arguments = []
    for format, syntax in (("JPEG", JPEG_BASELINE), ("JPEG2000", JPEG_2000)):
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, format)
        (tmp_path / format).write_bytes(buffer.getvalue())
        arguments += [str(tmp_path / format), syntax]
    run = subprocess.run([sys.executable, "-c", _DAMAGE_AND_DECODE, *arguments],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[-1] == "unexpected 0", run.stdout[-2000:]


def test_a_damaged_rle_stream_is_refused_not_a_panic() -> None:
    import random
    import warnings

    import pydicom
    from pydicom.uid import RLELossless

    from shared.errors import CxrError
    from shared.ml.preprocessing import decode_image
    from tests.helpers.dicom import make_dicom

    gray = (np.random.default_rng(0).random((64, 48)) * 4095).astype(np.uint16)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(gray, 12)))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    rle = buffer.getvalue()
    random.seed(1)
    outcomes = set()
    for _ in range(300):  # pylibjpeg-rle panics (pyo3's PanicException) on some of these
        data = bytearray(rle)
        i = random.randrange(len(data) * 2 // 3, len(data))
        data[i:i + 4] = random.randbytes(4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                decode_image(bytes(data), 5_000_000)
                outcomes.add("decoded")
            except CxrError as exc:
                outcomes.add(exc.code)
    assert "invalid_image" in outcomes


def _damaged_jpeg_frames(count: int) -> list[bytes]:
    """The frames _DAMAGE_AND_DECODE makes of a JPEG, in order (seed 0)."""
    import random

    gray = (np.random.default_rng(0).random((64, 48)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "JPEG")
    random.seed(0)
    frames = []
    for _ in range(count):
        data = bytearray(buffer.getvalue())
        for _ in range(random.randint(1, 4)):
            i = random.randrange(2, len(data))
            data[i:i + 2] = random.randbytes(2)
        frames.append(bytes(data))
    return frames


def test_frames_only_gdcm_decodes_are_decoded_in_a_child_that_may_die(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import ml
    from shared.errors import InvalidImage
    from shared.ml.preprocessing import decode_image

    # JPEG baseline as if no plugin but GDCM decoded it, as for JPEG lossless and JPEG-LS
    monkeypatch.setattr(ml.dicom, "plugin_for", lambda syntax: "")
    gray = (np.random.default_rng(0).random((64, 48)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "JPEG", quality=95)
    decoded = decode_image(encapsulated_dicom(buffer.getvalue(), 64, 48)).gray
    assert decoded.shape == (64, 48) and np.abs(decoded - gray).mean() < 8
    # the 304th damaged frame passes the frame check and makes GDCM abort its process
    # (SIGABRT): here, the child's
    aborting = _damaged_jpeg_frames(304)[-1]
    with pytest.raises(InvalidImage, match="its decoder failed"):
        decode_image(encapsulated_dicom(aborting, 64, 48))
