"""`cxr models list` and `cxr models activate`: the registry's versions, and which one serves."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Annotated

import typer

from cxr_cli.help_format import PanelledCommand
from cxr_cli.output import answer_console, table
from cxr_cli.runtime import load_settings
from shared.errors import NoActiveModel

if TYPE_CHECKING:
    from shared.manifest import ModelSummary
    from shared.registry import Registry

app = typer.Typer(help="The published model versions: list them, activate one.",
                  no_args_is_help=True, rich_markup_mode=None)

NO_MODEL = ("no model is active; train one with `cxr train --data DIR` (add `--base-weights "
            "none` when offline), activate one with `cxr models activate VERSION`, or pass "
            "{option} VERSION")


# "Which model version", the same option in every command that asks it.
ModelOption = Annotated[str | None, typer.Option(
    "--model", metavar="VERSION",
    help="The model version to use: an id `cxr models list` shows, or 'active'; the active "
         "one if omitted.")]


def chosen_version(registry: Registry, given: str | None, option: str) -> str:
    """The version asked for with ``option`` (it must exist), else (or for "active") the
    active one."""
    if given is not None and given != "active":
        registry.manifest(given)  # unknown: model_not_found now, not a failed load later
        return given
    active = registry.active()
    if active is None:
        raise NoActiveModel(NO_MODEL.format(option=option))
    return active.version


def _balanced_accuracy(summary: ModelSummary) -> str:
    test = summary.metrics.test
    if test is None or test.balanced_accuracy is None:
        return "-"
    interval = test.balanced_accuracy_ci
    return f"{test.balanced_accuracy:.3f}" + (
        f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else "")


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _print_table(summaries: list[ModelSummary], active: str | None) -> None:
    if not summaries:
        typer.echo("no versions yet: train one with `cxr train --data DIR`")
        return
    console = answer_console()
    shown = table(console, "Version", "Created (UTC)", "Dataset",
                  "Test balanced accuracy (95% CI)", "Better than chance", "Active")
    for summary in summaries:
        shown.add_row(summary.version, f"{summary.created_at:%Y-%m-%d %H:%M}", summary.dataset,
                      _balanced_accuracy(summary), _yes_no(summary.better_than_chance),
                      "*" if summary.version == active else "")
    console.print(shown)


@app.command("list", cls=PanelledCommand)
def list_models(
    as_json: Annotated[bool, typer.Option(
        "--json", help="{active, versions}: each version as GET /models lists it.")] = False,
) -> None:
    """Every published version, newest first, with its test figures; * marks the active."""
    from shared.registry import open_registry

    registry = open_registry(load_settings())
    pointer = registry.active()
    active = pointer.version if pointer else None
    summaries = [manifest.summary() for manifest in registry.versions()]
    if as_json:
        typer.echo(json.dumps({"active": active, "versions": [
            summary.model_dump(mode="json") for summary in summaries]}, indent=2))
        return
    _print_table(summaries, active)


@app.command("activate", cls=PanelledCommand)
def activate_model(
    version: Annotated[str, typer.Argument(help="A version `cxr models list` shows.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Serve it even though its test interval includes chance (or it has "
                        "none); the audit trail records that it was forced.")] = False,
) -> None:
    """Make VERSION the active one (pin, or roll back), as POST /models/{v}/activate does.

    A version not shown better than chance on its test split needs --force. Running API
    processes serve it within seconds; `cxr predict` uses it at once."""
    from shared.activation import check_activation
    from shared.errors import ConfirmationRequired
    from shared.monitoring.audit import audit_now, open_audit_store
    from shared.registry import open_registry

    settings = load_settings()
    registry = open_registry(settings)
    manifest = registry.manifest(version)
    trail = open_audit_store(settings)  # before the change: one that cannot be recorded fails
    record = partial(audit_now, trail, actor="cli", role="cli", action="activate",
                     target=version)
    try:
        forced = check_activation(manifest, force)
    except ConfirmationRequired as refused:
        record(outcome="refused", error=refused.code)
        raise
    registry.activate(version)
    record(outcome="ok", detail=f"forced: {forced}" if forced else None)
    typer.echo(f"model version {version} is active" + (
        f" (forced: {forced}; recorded in the audit trail)" if forced else ""))
