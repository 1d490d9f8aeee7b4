"""The ``cxr`` command: run the API, the worker or both; train, predict, evaluate and manage
model versions locally.

This package is the composition root: it starts ``api`` and ``worker`` as separate processes
(or imports one of them lazily), so the two packages still never import each other.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cxr_cli import evaluating, models, predicting, services, training
from cxr_cli.errors import OneLineErrors
from cxr_cli.help_format import PanelledCommand

# rich_markup_mode=None: click's plain help, whose option names are never cut (rich's
# tables shorten them to fit 80 columns); PanelledCommand keeps the panels.
app = typer.Typer(cls=OneLineErrors, help="cxr-service: chest X-ray classification with VGG16.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None)


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


for command in (services.serve, services.worker, services.up, services.key, training.train,
                predicting.predict, evaluating.evaluate):
    app.command(cls=PanelledCommand)(command)
app.add_typer(models.app, name="models")

__all__ = ["app"]
