"""`cxr train`'s options, made from TrainingParams' fields: each field is an option, with the
schema's description, choices and bounds as its help, so that a new field is a new option."""

from __future__ import annotations

import inspect
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import typer
from pydantic.fields import FieldInfo

from shared.training_params import FINE_TUNE_DEFAULTS, TrainingParams

# The fields the command line gives as folders: the datasets trained on (the first is
# `dataset`, the others `datasets`) and the external sets scored before publishing.
FOLDER_OPTIONS = {"dataset": "--data", "datasets": "--data",
                  "external_datasets": "--external-data"}
PANEL = "Training (TrainingParams)"
# The schema's phrases about those fields, in the command line's words.
PHRASES = {"`dataset` or one of `datasets`": "the name of a --data folder",
           "dataset or one of datasets": "the name of a --data folder",
           "dataset and datasets": "--data"}


def option_name(field: str) -> str:
    """The option that sets a TrainingParams field."""
    return FOLDER_OPTIONS.get(field, "--" + field.replace("_", "-"))


def cli_words(text: str) -> str:
    """The schema's words as the command line spells them: field names become options."""
    for phrase, words in PHRASES.items():
        text = text.replace(phrase, words)
    for field in sorted(TrainingParams.model_fields, key=len, reverse=True):
        text = text.replace(f"`{field}`", option_name(field))
        if "_" in field:
            text = re.sub(rf"\b{field}\b", option_name(field), text)
    return text


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(info: FieldInfo) -> str | None:
    low = high = ""
    for rule in info.metadata:
        if isinstance(rule, at.Ge | at.Gt):
            low = f"{_number(getattr(rule, 'ge', getattr(rule, 'gt', None)))} " \
                  f"{'<=' if isinstance(rule, at.Ge) else '<'} "
        elif isinstance(rule, at.Le | at.Lt):
            high = f" {'<=' if isinstance(rule, at.Le) else '<'} " \
                   f"{_number(getattr(rule, 'le', getattr(rule, 'lt', None)))}"
    return f"{low}x{high}" if low or high else None


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` as (X, True); anything else as (it, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        return kept[0], len(kept) < len(get_args(annotation))
    return annotation, False


def _help(field: str, info: FieldInfo, choices: tuple[str, ...]) -> str:
    parts = [cli_words(info.description or "")]
    if choices:
        parts.append(f"One of: {', '.join(choices)}.")
    if bounds := _bounds(info):
        parts.append(f"Range: {bounds}.")
    default = info.get_default(call_default_factory=True)
    if default not in (None, []):
        fine_tune = FINE_TUNE_DEFAULTS.get(field, default)
        parts.append(f"Default: {_number(default)}" + (
            f" ({_number(fine_tune)} with --base-version)." if fine_tune != default else "."))
    return " ".join(part for part in parts if part)


def _parameter(field: str, info: FieldInfo) -> inspect.Parameter:
    """The keyword parameter typer reads the field's option from: typed loosely (a choice
    as a string), since TrainingParams validates every value and says what is wrong. None
    when not given, so that the request's own defaults apply (a fine-tune's differ)."""
    kind, _ = _optional(info.annotation)
    choices = get_args(kind) if get_origin(kind) is Literal else ()
    cli_type = str if choices else kind
    name = option_name(field)
    declared = f"{name}/--no-{name[2:]}" if cli_type is bool else name
    option = typer.Option(declared, help=_help(field, info, choices), rich_help_panel=PANEL,
                          show_default=False)
    return inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[cli_type | None, option])


def training_parameters() -> list[inspect.Parameter]:
    """A parameter for each TrainingParams field that is not a folder."""
    return [_parameter(field, info) for field, info in TrainingParams.model_fields.items()
            if field not in FOLDER_OPTIONS]


def with_training_options(command: Any) -> Any:
    """``command(**options)`` with its signature extended by the training parameters, so that
    typer makes an option of each."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = inspect.Signature([*own, *training_parameters()])
    return command
