"""What the commands share before they work: the settings, the --verbose option, and a
TensorFlow that starts without its C++ start-up lines."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from types import ModuleType
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
# (absl logs to stderr until it is initialised; no variable quiets it): the notice saying so,
# and absl's lines ("I0000 00:00:1796391040.601880   11510 cudart_stub.cc:31] ..."), whose
# first letter is the severity. After loading, TensorFlow applies the level itself.
ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}  # TF_CPP_MIN_LOG_LEVEL's scale


def load_settings() -> Settings:
    """The settings every command reads (tests replace get_settings here)."""
    return get_settings()


def quiet_tensorflow(verbose: bool) -> None:
    """Unless asked for: TensorFlow's C++ logs at FATAL only (unless TF_CPP_MIN_LOG_LEVEL is
    set), its loading filtered to that level too, wherever this process first imports it,
    and no Python warnings from libraries (unless -W or PYTHONWARNINGS say otherwise)."""
    if verbose:
        return
    # 3, not 2: TensorFlow logs a failed CUDA initialisation ("failed call to cuInit") at
    # ERROR (2) on every machine with a CUDA driver and no usable GPU; a real error also
    # reaches Python as an exception.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def start_tensorflow(verbose: bool) -> None:
    """Load TensorFlow now, quietly unless asked for: also without the lines its libraries
    print while they load."""
    quiet_tensorflow(verbose)
    import tensorflow  # noqa: F401


def min_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0, everything, when unset or not a
    number)."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "")
    return int(value) if value.isdigit() else 0


def shown(line: str, level: int) -> bool:
    """Whether a line TensorFlow's libraries printed while loading passes ``level``."""
    if line.startswith(ABSL_NOTICE):
        return level == 0
    native = NATIVE_LINE.match(line)
    return native is None or SEVERITY[native.group(1)] >= level


@contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Holds back what is written to file descriptor 2 (where C++ libraries print), then
    writes it to stderr without the native log lines below TF_CPP_MIN_LOG_LEVEL."""
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
            level = min_level()
            sys.stderr.write("".join(line for line in lines if shown(line, level)))
            sys.stderr.flush()


class _FilteredLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run inside ``native_stderr_filtered``."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def __getattr__(self, name: str) -> object:  # the rest of the loader's protocol
        return getattr(self.loader, name)

    def exec_module(self, module: ModuleType) -> None:
        try:
            with native_stderr_filtered():
                self.loader.exec_module(module)
        finally:  # the module keeps its own loader, for whatever asks it later
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader


class _QuietImport(importlib.abc.MetaPathFinder):
    """Wherever this process first imports TensorFlow (the API does so in the thread that
    loads its first model), the lines its libraries print while loading are filtered."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "tensorflow":
            return None
        if self in sys.meta_path:  # once: the finders after it find the real spec
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec
