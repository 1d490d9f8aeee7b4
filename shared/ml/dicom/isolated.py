"""Frames that only GDCM decodes (JPEG lossless, JPEG-LS), decoded in a child process: on
some damaged frames GDCM throws a C++ exception that aborts the process it runs in, and that
must not be the API. The child reads the file on stdin and writes the stored pixels as .npy;
any failure of it, an abort included, is the file's refusal."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np

from shared.errors import InvalidImage

# Imports nothing of the service: the child needs pydicom, numpy and the decoder only.
_CHILD = """
import io, sys, warnings
import numpy as np
import pydicom
warnings.simplefilter("ignore")
ds = pydicom.dcmread(io.BytesIO(sys.stdin.buffer.read()))
np.save(sys.stdout.buffer, np.asarray(ds.pixel_array), allow_pickle=False)
"""
TIMEOUT_S = 120.0


def decode_in_child(data: bytes, timeout_s: float = TIMEOUT_S) -> np.ndarray:
    """The stored pixels of a DICOM file, decoded by pydicom's own choice of plugin in a
    child process."""
    try:
        run = subprocess.run([sys.executable, "-c", _CHILD], input=data, capture_output=True,
                             timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InvalidImage(f"the DICOM pixel data was not decoded within {timeout_s:g} s"
                           ) from exc
    if run.returncode != 0:
        raise InvalidImage("the DICOM pixel data could not be decoded (its decoder failed)")
    try:
        return np.asarray(np.load(io.BytesIO(run.stdout), allow_pickle=False))
    except ValueError as exc:
        raise InvalidImage("the DICOM pixel data could not be decoded (no pixels came back)"
                           ) from exc
