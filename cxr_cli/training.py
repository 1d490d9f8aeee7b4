"""`cxr train`: train on local folders and publish, in this process (no queue)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from cxr_cli.errors import InvalidOption, require_extras, validation_message
from cxr_cli.options import cli_words, option_name, with_training_options
from cxr_cli.progress import ConsoleReporter
from cxr_cli.runtime import Verbose, load_settings, start_tensorflow
from shared.errors import InvalidDataset, WeightsUnavailable
from shared.training_params import TrainingParams

if TYPE_CHECKING:
    from shared.datasets import Dataset
    from shared.manifest import Promotion

# What to do when the base weights cannot be had, in this command's words.
WEIGHTS_WAY_OUT = ("use --base-weights none (a random start: trains offline), or "
                   "--base-weights file with CXR_BASE_WEIGHTS_FILE pointing to a local VGG16 "
                   "no-top weights file (and CXR_BASE_WEIGHTS_SHA256)")

Folders = Annotated[list[Path], typer.Option(
    "--data", exists=True, file_okay=False, readable=True, rich_help_panel="Data",
    help="Dataset folder (class folders, or the COVID-19 Radiography Database layout); "
         "repeat it to train on several sources at once. Its name is the source's name.")]
ExternalFolders = Annotated[list[Path] | None, typer.Option(
    "--external-data", exists=True, file_okay=False, readable=True, rich_help_panel="Data",
    help="Another hospital's labelled folder (one class is enough), scored before "
         "publishing; repeat it for several.")]


def folder_name(folder: Path) -> str:
    """A folder's dataset name: its own name, in the characters a name may hold."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", folder.resolve().name)[:64] or "dataset"


def validated(values: dict[str, Any]) -> TrainingParams:
    """The request, or one line naming each wrong option as the command line spells it."""
    try:
        return TrainingParams.model_validate(values)
    except ValidationError as exc:
        raise InvalidOption(validation_message(exc, option_name, cli_words)) from exc


def discover_folder(folder: Path, option: str, min_classes: int) -> Dataset:
    """The dataset in a folder given with ``option``; its errors name the option."""
    from shared.datasets import discover

    try:
        return discover(folder, min_classes)
    except InvalidDataset as exc:
        raise InvalidDataset(f"{option} {folder}: {exc.message}") from exc
    except OSError as exc:  # a class folder it may not list
        raise InvalidDataset(f"{option} {folder}: cannot read {exc.filename or folder}: "
                             f"{exc.strerror or exc}") from exc


def _weights_in_cli_words(exc: WeightsUnavailable) -> WeightsUnavailable:
    from shared.ml.modeling import ALTERNATIVES

    return WeightsUnavailable(f"{exc.message.replace(f'; {ALTERNATIVES}', '')}; "
                              f"{WEIGHTS_WAY_OUT}")


@with_training_options
def train(data: Folders, external_data: ExternalFolders = None,
          verbose: Verbose = False, **options: Any) -> None:
    """Train on local folders and publish the model, activated if the promotion decision
    agrees (no queue)."""
    require_extras("cxr train", "worker")
    names = [folder_name(folder) for folder in data]
    external = {folder_name(folder): folder for folder in external_data or []}
    if len(external) < len(external_data or []):  # the sets are told apart by name
        raise InvalidOption("--external-data: two folders have the same name")
    given = {field: value for field, value in options.items() if value is not None}
    params = validated({**given, "dataset": names[0], "datasets": names[1:],
                        "external_datasets": list(external)})
    from shared.datasets import combine

    # A fine-tune's one-class folder is refused by its class check, which says why.
    least = 1 if params.base_version else 2
    dataset = combine([(name, discover_folder(folder, "--data", least))
                       for name, folder in zip(names, data, strict=True)])
    external_sets = {name: discover_folder(folder, "--external-data", 1)
                     for name, folder in external.items()}
    start_tensorflow(verbose)
    from worker.context import JobContext
    from worker.runner.retrain import train_and_publish

    settings = load_settings()
    with ConsoleReporter() as reporter:
        try:
            version = train_and_publish(dataset, params, JobContext(settings, reporter),
                                        external_sets)
        except WeightsUnavailable as exc:
            raise _weights_in_cli_words(exc) from exc
    _print_outcome(version)


def outcome_line(version: str, promotion: Promotion | None) -> str:
    """What became of the new version, in words that cannot be read the other way round."""
    if promotion is None:
        return f"published model version {version}; not activated (no promotion decision)"
    if promotion.activated:
        return f"published model version {version} and activated it: {promotion.reason}"
    return f"published model version {version}; not activated: {promotion.reason}"


def _print_outcome(version: str) -> None:
    from shared.registry import open_registry

    typer.echo(outcome_line(version, open_registry(load_settings()).manifest(version).promotion))
