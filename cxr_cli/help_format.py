"""Help that stays whole at any width and in a pipe: click's plain layout (an option's name
is never cut; a long one puts its help on the next line), lines never broken at a hyphen (so
an option named in a help text stays whole, to copy), and the options grouped under the
panels the commands name (``rich_help_panel``), as rich's boxes did."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

import typer
from typer._click.core import Context  # typer carries its own click: its contexts' types
from typer._click.formatting import HelpFormatter
from typer.core import TyperCommand

ARGUMENTS, OPTIONS = "Arguments", "Options"
COLUMN_MAX, GAP = 30, 2  # click's own: the names' column, and the space after it


def _wrapped(text: str, width: int) -> list[str]:
    """``text``'s paragraphs (split at blank lines) wrapped at spaces only."""
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        if lines:
            lines.append("")
        lines += textwrap.wrap(" ".join(paragraph.split()), max(width, 10),
                               break_on_hyphens=False, break_long_words=False)
    return lines


class WholeWords(HelpFormatter):
    """click's formatter, wrapping at spaces only."""

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        self.write("".join(f"{indent}{line}\n" if line else "\n"
                           for line in _wrapped(text, self.width - self.current_indent)))

    def write_dl(self, rows: Iterable[tuple[str, str]], col_max: int = COLUMN_MAX,
                 col_spacing: int = GAP) -> None:
        rows = list(rows)
        column = min(max((len(first) for first, _ in rows), default=0), col_max) + col_spacing
        indent = self.current_indent
        for first, second in rows:
            self.write(f"{'':>{indent}}{first}")
            lines = _wrapped(second, self.width - indent - column) if second else []
            if not lines:
                self.write("\n")
                continue
            # a name longer than the column puts its help on the next line
            self.write(" " * (column - len(first)) if len(first) <= column - col_spacing
                       else "\n" + " " * (column + indent))
            self.write(f"\n{'':>{column + indent}}".join(lines) + "\n")


class WholeWordsContext(typer.Context):
    formatter_class = WholeWords


class PanelledCommand(TyperCommand):
    """A command whose --help lists its arguments, its own options, then each panel's."""

    context_class = WholeWordsContext

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {ARGUMENTS: [], OPTIONS: []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            panel = ARGUMENTS if param.param_type_name == "argument" else (
                getattr(param, "rich_help_panel", None) or OPTIONS)
            sections.setdefault(panel, []).append(record)
        for panel, rows in sections.items():
            if rows:
                with formatter.section(panel):
                    formatter.write_dl(rows)
