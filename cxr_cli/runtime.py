"""What the commands share before they work: the settings, the --verbose option, and a
TensorFlow that starts without its C++ start-up lines."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from shared.config import Settings, get_settings


class _Flags:
    verbose = False  # set by the running command; the error handler reads it


flags = _Flags()


def _remember(verbose: bool) -> bool:
    flags.verbose = verbose  # as the option is parsed: an error before any work reads it
    return verbose


Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", envvar="CXR_VERBOSE", callback=_remember,
    help="Show TensorFlow's start-up lines, library warnings, and the traceback of an "
         "unexpected error.")]

# What TensorFlow's C++ libraries print while they load, before TF_CPP_MIN_LOG_LEVEL applies
# (absl logs to stderr until it is initialised; no variable quiets it): the notice saying so
# and absl's INFO and WARNING lines, "no CUDA driver" among them. Errors (E, F) still show.
NATIVE_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                          r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] )")


def load_settings() -> Settings:
    """The settings every command reads (tests replace get_settings here)."""
    return get_settings()


def quiet_tensorflow(verbose: bool) -> None:
    """Unless asked for: TensorFlow's C++ logs at FATAL only (unless TF_CPP_MIN_LOG_LEVEL is
    set) and no Python warnings from libraries (unless -W or PYTHONWARNINGS say otherwise)."""
    if verbose:
        return
    # 3, not 2: TensorFlow logs a failed CUDA initialisation on every CPU-only machine at
    # ERROR (2); a real error also reaches Python as an exception.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not sys.warnoptions:
        warnings.simplefilter("ignore")


def start_tensorflow(verbose: bool) -> None:
    """Load TensorFlow now, quietly unless asked for: also without the lines its libraries
    print while they load."""
    quiet_tensorflow(verbose)
    if not verbose and "tensorflow" not in sys.modules:
        with native_stderr_filtered():
            import tensorflow  # noqa: F401


@contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Holds back what is written to file descriptor 2 (where C++ libraries print), then
    writes it to stderr without the lines NATIVE_NOISE matches."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not NATIVE_NOISE.match(line)))
