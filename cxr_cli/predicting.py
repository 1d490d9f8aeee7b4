"""`cxr predict`: classify local images with a published version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column

from cxr_cli.models import ModelOption, chosen_version
from cxr_cli.output import answer_console, table
from cxr_cli.runtime import Verbose, load_settings, start_tensorflow
from shared.errors import CxrError

if TYPE_CHECKING:
    from shared.schemas import Prediction

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}


def _images(paths: list[Path]) -> list[Path]:
    """Each path, a folder standing for the image files in it (sorted, not recursive)."""
    images: list[Path] = []
    for path in paths:
        if not path.is_dir():
            images.append(path)
            continue
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise typer.BadParameter(f"no .png, .jpg, .jpeg or .dcm file in {path}")
        images.extend(found)
    return images


def _print_table(paths: list[Path], answers: list[Prediction | CxrError]) -> None:
    console = answer_console()
    # Folded, not cut with an ellipsis: a file name is only useful whole.
    shown = table(console, Column("File", overflow="fold"), "Label",
                  Column("Probability", justify="right"), Column("Reliable", overflow="fold"))
    for path, answer in zip(paths, answers, strict=True):
        if isinstance(answer, CxrError):
            shown.add_row(str(path), "-", "-", f"error: {answer.code}: {answer.message}")
            continue
        reliable = "yes" if answer.reliable else "no: " + ", ".join(answer.reasons)
        top = answer.probabilities[answer.label]
        shown.add_row(str(path), answer.label, f"{top:.1%}", reliable)
    console.print(shown)


def _print_json(paths: list[Path], answers: list[Prediction | CxrError]) -> None:
    entries = [{"file": str(path), "error": {"code": a.code, "message": a.message}}
               if isinstance(a, CxrError) else
               {"file": str(path), "prediction": a.model_dump(mode="json")}
               for path, a in zip(paths, answers, strict=True)]
    typer.echo(json.dumps(entries, indent=2))


def _chosen(model: str | None, old_spelling: str | None) -> str | None:
    """--model, or the deprecated --version it replaced (which read as `cxr --version`)."""
    if old_spelling is None:
        return model
    if model is not None and model != old_spelling:
        raise typer.BadParameter("give the version once, with --model", param_hint="--version")
    typer.echo("warning: `cxr predict --version` is deprecated: use --model", err=True)
    return old_spelling


def predict(
    files: Annotated[list[Path], typer.Argument(
        exists=True, help="Images, or folders of them (.png .jpg .jpeg .dcm, not recursive).")],
    model: ModelOption = None,
    old_spelling: Annotated[str | None, typer.Option(
        "--version", hidden=True, help="Deprecated spelling of --model.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list instead of the table, one {file, prediction} or "
                       "{file, error} for each image, even for one image.")] = False,
    verbose: Verbose = False,
) -> None:
    """Classify images with the active (or a given) version and print a table, one row an
    image: its label, that label's probability and whether the answer is reliable (with
    why not). With one image, its failure is the command's error; with several, exit 1
    if any image failed."""
    from shared.registry import open_registry

    settings = load_settings()
    registry = open_registry(settings)
    chosen = chosen_version(registry, _chosen(model, old_spelling), "--model")
    paths = _images(files)
    start_tensorflow(verbose)
    from shared.loading import load_version
    from shared.ml.screening import ImageLimits

    # Files are read one at a time as their turn comes, and passed a few dozen at once.
    answers = load_version(registry, chosen).answer_images(paths,
                                                           ImageLimits.from_settings(settings))
    from shared.monitoring.answers import log_answers_now

    # Logged like the API's answers (source "cli"), so that the reading room can label them.
    log_answers_now(settings, answers, [None if isinstance(a, CxrError) else p.read_bytes()
                                        for p, a in zip(paths, answers, strict=True)], "cli")
    if len(answers) == 1 and isinstance(answers[0], CxrError):
        raise answers[0]  # one image: its error is the command's
    (_print_json if as_json else _print_table)(paths, answers)
    failed = sum(isinstance(a, CxrError) for a in answers)
    if failed:
        typer.echo(f"{failed} of {len(answers)} images failed", err=True)
        raise typer.Exit(1)
