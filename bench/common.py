"""What the benchmarks share: the real X-rays they read, where their results go, and the
options several of them take, each defined once.

The scripts run as files (``.venv/bin/python bench/<script>.py``), so this folder is first on
their import path and they import this module as ``common``; importing it puts the checkout
next on that path, for the project's packages. Standard library only: bench/gpu_keras.py
imports it on a machine without the project's dependencies.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))
# The real X-rays sit beside the checkout, where the test suite reads them too.
DATA = REPO.parent / "shared" / "data"
RADIOGRAPHY = DATA / "covid19-radiography"  # <Class>/images/*.png
CLASSES = ("COVID", "Normal", "Viral Pneumonia")  # the radiography copy's, in label order
# Other hospitals' films: the external sets a version is scored on.
EXTERNAL = {"covid19-image-dataset": DATA / "covid19-image-dataset",
            "hannover": DATA / "covid-external" / "hannover",
            "siim-bimcv-ricord": DATA / "covid-external" / "siim-bimcv-ricord"}
RESULTS = REPO / "bench" / "results"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser, described by the first paragraph of its docstring."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])


def add_size(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--size", type=int, default=default,
                        help=f"image size in pixels, square (default {default})")


def add_seed(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--seed", type=int, default=default,
                        help=f"seed of the sample or split (default {default})")


def add_port(parser: argparse.ArgumentParser, default: int) -> None:
    # A default of each script's own, so that two benchmarks can run side by side.
    parser.add_argument("--port", type=int, default=default,
                        help=f"port of the `cxr serve` this run starts (default {default})")


def numbers(text: str) -> list[int]:
    """A comma-separated list of whole numbers, as ``--levels 1,4,16``."""
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}") from None


def add_load(parser: argparse.ArgumentParser, seconds: float, batches: str) -> None:
    """The options of a throughput sweep: load per level, its levels, the ceiling's batches."""
    parser.add_argument("--seconds", type=float, default=seconds,
                        help=f"seconds of load at each concurrency (default {seconds:g})")
    parser.add_argument("--levels", type=numbers, default="1,4,16,64",
                        help="concurrent clients, comma-separated (default 1,4,16,64)")
    parser.add_argument("--batches", type=numbers, default=batches,
                        help=f"batch sizes of the forward-pass ceiling (default {batches})")


def save(stem: str, result: Any, markdown: str | None = None, *, indent: int = 2,
         default: Callable[[Any], Any] | None = None) -> Path:
    """``result`` as bench/results/<stem>.json, and ``markdown``, if any, as <stem>.md beside
    it; returns the JSON's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(result, indent=indent, default=default))
    if markdown is not None:
        (RESULTS / f"{stem}.md").write_text(markdown)
    return path
