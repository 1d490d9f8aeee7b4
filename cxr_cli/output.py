"""A command's answer on stdout: tables that read well on a terminal and stay whole in a pipe."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Column, Table


def answer_console() -> Console:
    """stdout; piped into a file or grep, without wrapping at rich's default 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=1000)


def table(console: Console, *columns: Column | str) -> Table:
    """A table with a ruled header on a terminal, and bare columns in a pipe (no box
    drawing for grep and cut)."""
    piped = not console.is_terminal
    return Table(*columns, box=None if piped else box.SIMPLE_HEAD, pad_edge=not piped)
