"""The ``cxr`` command: run the API, the worker or both, train and predict locally.

This module is the composition root: it starts ``api`` and ``worker`` as separate processes
(or imports one of them lazily), so the two packages still never import each other.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from shared.config import get_settings
from shared.errors import CxrError, NoActiveModel
from shared.schemas import JobProgress, TrainingParams

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.ml.served import ServedVersion
    from shared.schemas import ChestXrayCheck, Prediction

app = typer.Typer(help="cxr-service: chest X-ray classification with VGG16.",
                  no_args_is_help=True, add_completion=False)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"cxr-service {version('cxr-service')}")
        except PackageNotFoundError:  # a checkout that was never installed
            typer.echo("cxr-service (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the installed version and exit.")] = False,
) -> None:
    """cxr-service: chest X-ray classification with VGG16."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [CXR_HOST].")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535,
                                             help="Port to listen on [CXR_PORT].")] = None,
) -> None:
    """Run the HTTP API (uvicorn) on CXR_HOST:CXR_PORT (8000 on 127.0.0.1 by default)."""
    import uvicorn

    from api.http_protocol import bounded_protocol
    from shared.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # log_config=None: uvicorn's lines go through ours; the API logs its own access lines.
    uvicorn.run("api.main:create_app", factory=True, host=host or settings.host,
                port=port or settings.port,
                log_level=settings.log_level, log_config=None, access_log=False,
                http=bounded_protocol(settings.max_header_bytes, settings.max_header_fields))


@app.command()
def worker() -> None:
    """Run one Celery training worker on the `training` queue."""
    from shared.logs import configure_logging
    from shared.task_queue import TRAINING_QUEUE
    from worker.celery_app import app as celery_app

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Celery's banner is for a terminal; JSON logs get its facts from the log lines.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    # No mingle or gossip: jobs are cancelled through the job store, not Celery's revokes, so
    # a starting worker has nothing to sync with its peers and need not wait a second for them.
    celery_app.worker_main([*quiet, "worker", "--queues", TRAINING_QUEUE, "--concurrency", "1",
                            "--pool", "prefork", "--without-mingle", "--without-gossip",
                            "--loglevel", settings.log_level.upper()])


@app.command()
def key(
    name: Annotated[str, typer.Option(help="A name for the key's holder.")] = "admin",
    role: Annotated[str, typer.Option(help="admin (may change things) or reader.")] = "admin",
) -> None:
    """Make a new API key: print it once, and the CXR_API_KEYS entry that holds its hash."""
    import secrets

    from shared.config import key_digest

    if role not in ("admin", "reader"):
        raise typer.BadParameter("role is admin or reader")
    secret = secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": key_digest(secret), "role": role}
    typer.echo(f"key (send as X-API-Key; shown only now): {secret}")
    typer.echo(f"settings entry: CXR_API_KEYS='{json.dumps([entry])}'")


@app.command()
def up() -> None:
    """Run the API and one worker together until interrupted."""
    children = [subprocess.Popen([sys.executable, "-m", "cxr_cli", name])
                for name in ("worker", "serve")]

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        stop()
        for child in children:
            child.wait(timeout=60)
    raise typer.Exit(max((c.returncode or 0) for c in children))


@contextmanager
def user_errors() -> Iterator[None]:
    """Domain errors end the command with their code and message, not a traceback."""
    try:
        yield
    except CxrError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from exc


class PrintReporter:
    def epoch_end(self, progress: JobProgress) -> bool:
        last = progress.last.model_dump(exclude_none=True) if progress.last else {}
        typer.echo(f"epoch {progress.epoch}/{progress.epochs} ({progress.phase}) {last}")
        return False

    def cancel_requested(self) -> bool:
        return False


@app.command()
def train(
    data: Annotated[list[Path], typer.Option(help="Dataset folder (class folders or the "
                                                  "COVID-19 Radiography layout); repeat it "
                                                  "to train on several sources at once.")],
    holdout_source: Annotated[str | None, typer.Option(
        help="Leave this source (a --data folder's name) out: the test split is its "
             "images.")] = None,
    intensity_augmentation: bool = False,
    epochs: int = 20,
    batch_size: int = 16,
    image_size: int = 224,
    learning_rate: float = 1e-3,
    base_weights: str = "imagenet",
    seed: int | None = None,
    fine_tune: bool = True,
    fine_tune_epochs: int = 10,
) -> None:
    """Train on a local folder and publish the model as the active version (no queue)."""
    from shared.datasets import combine, discover
    from shared.registry import open_registry
    from worker.context import JobContext
    from worker.runner.jobs import train_and_publish

    names = [re.sub(r"[^A-Za-z0-9_.-]", "_", folder.resolve().name)[:64] or "dataset"
             for folder in data]
    settings = get_settings()
    with user_errors():
        # Validated, not typed: base_weights is any string to typer, one of three to params.
        try:
            params = TrainingParams.model_validate({
                "dataset": names[0], "datasets": names[1:], "holdout_source": holdout_source,
                "intensity_augmentation": intensity_augmentation, "epochs": epochs,
                "batch_size": batch_size, "image_size": image_size,
                "learning_rate": learning_rate, "base_weights": base_weights, "seed": seed,
                "fine_tune": fine_tune, "fine_tune_epochs": fine_tune_epochs})
        except ValidationError as exc:
            typer.echo(f"error: validation_error: {exc}", err=True)
            raise typer.Exit(2) from exc
        dataset = combine([(name, discover(folder)) for name, folder in zip(names, data,
                                                                            strict=True)])
        version = train_and_publish(dataset, params, JobContext(settings, PrintReporter()))
    promotion = open_registry(settings).manifest(version).promotion
    state = "activated" if promotion and promotion.activated else "kept as a candidate"
    typer.echo(f"published model version {version}, {state}: "
               f"{promotion.reason if promotion else 'n/a'}")


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="A labelled folder, e.g. another hospital's.")],
    model: Annotated[str | None, typer.Option(help="Version; the active one if omitted.")] = None,
) -> None:
    """Evaluate a version on a labelled folder; store and print the external report."""
    from shared.datasets import discover
    from shared.registry import open_registry
    from worker.evaluation.external import evaluate_external

    settings = get_settings()
    registry = open_registry(settings)
    with user_errors():
        active = registry.active()
        version = model or (active.version if active else None)
        if version is None:
            raise NoActiveModel("no model is active; pass --model VERSION")
        report = evaluate_external(registry, version, discover(data, min_classes=1),
                                   data.resolve().name, settings.max_image_pixels)
        stored = registry.save_evaluation(version, report)
    typer.echo(report.model_dump_json(indent=2))
    typer.echo(f"stored as {stored}", err=True)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
PREDICT_CHUNK = 16  # images decoded and passed at once: bounds memory on a large folder


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


def _answers(model: ServedVersion, paths: list[Path], settings: Settings
             ) -> list[Prediction | CxrError]:
    """Each image's answer or its own error, in order; one forward pass per chunk."""
    import numpy as np

    from shared.errors import InvalidImage
    from shared.ml.served import with_check

    answers: list[Prediction | CxrError] = []
    for start in range(0, len(paths), PREDICT_CHUNK):
        chunk: list[Prediction | CxrError | None] = []
        good: list[tuple[int, np.ndarray, ChestXrayCheck | None]] = []
        for path in paths[start:start + PREDICT_CHUNK]:
            try:
                image = model.decode(path.read_bytes(), settings.max_image_pixels)
                good.append((len(chunk), *model.screen(image, settings.xray_gate)))
                chunk.append(None)
            except OSError as exc:  # one unreadable file fails alone, as a bad image does
                chunk.append(InvalidImage(f"cannot read {path}: {exc.strerror or exc}"))
            except CxrError as exc:
                chunk.append(exc)
        if good:
            batch = model.predict_batch(np.stack([pixels for _, pixels, _ in good]))
            for (i, _, check), answer in zip(good, batch, strict=True):
                chunk[i] = with_check(answer, check)
        answers.extend(a for a in chunk if a is not None)
    return answers


def _print_table(paths: list[Path], answers: list[Prediction | CxrError]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Column, Table

    console = Console()
    # Piped into a file or grep: no box drawing, and no wrapping at rich's default 80 columns.
    piped = not console.is_terminal
    if piped:
        console = Console(width=1000)
    # Folded, not cut with an ellipsis: a file name is only useful whole.
    table = Table(Column("File", overflow="fold"), "Label",
                  Column("Probability", justify="right"), Column("Reliable", overflow="fold"),
                  box=None if piped else box.SIMPLE_HEAD, pad_edge=not piped)
    for path, answer in zip(paths, answers, strict=True):
        if isinstance(answer, CxrError):
            table.add_row(str(path), "-", "-", f"error: {answer.code}: {answer.message}")
            continue
        reliable = "yes" if answer.reliable else "no: " + ", ".join(answer.reasons)
        top = answer.probabilities[answer.label]
        table.add_row(str(path), answer.label, f"{top:.1%}", reliable)
    console.print(table)


def _print_json(paths: list[Path], answers: list[Prediction | CxrError]) -> None:
    entries = [{"file": str(path), "error": {"code": a.code, "message": a.message}}
               if isinstance(a, CxrError) else
               {"file": str(path), "prediction": a.model_dump(mode="json")}
               for path, a in zip(paths, answers, strict=True)]
    typer.echo(json.dumps(entries, indent=2))


@app.command()
def predict(
    files: Annotated[list[Path], typer.Argument(
        help="Images, or folders of them (.png .jpg .jpeg .dcm, not recursive).")],
    version: str | None = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON even for several images: one "
                                                          "{file, prediction|error} each.")]
    = False,
) -> None:
    """Classify images with the active (or a given) version: one image prints its JSON,
    several a table; exit 1 if any image failed."""
    from shared.ml.served import load_version
    from shared.registry import open_registry

    settings = get_settings()
    registry = open_registry(settings)
    active = registry.active()
    chosen = version or (active.version if active else None)
    paths = _images(files)
    with user_errors():
        if chosen is None:
            raise NoActiveModel("no model is active; train one with `cxr train --data DIR`")
        answers = _answers(load_version(registry, chosen), paths, settings)
        if len(answers) == 1:  # one image answers as it always has: scripts read this JSON
            answer = answers[0]
            if isinstance(answer, CxrError):
                raise answer
            typer.echo(answer.model_dump_json(indent=2))
            if not answer.reliable:
                typer.echo(f"not a finding: {', '.join(answer.reasons)}", err=True)
            return
    if as_json:
        _print_json(paths, answers)
    else:
        _print_table(paths, answers)
    failed = sum(isinstance(a, CxrError) for a in answers)
    if failed:
        typer.echo(f"{failed} of {len(answers)} images failed", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
