"""The words and tables a model card is written with."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ci(value: float | None, interval: list[float] | None) -> str:
    suffix = f" ({fmt(interval[0])}–{fmt(interval[1])})" if interval else ""
    return fmt(value) + suffix


def inline(text: str) -> str:
    """Text from a dataset (a class or source name) kept on its line."""
    return " ".join(text.splitlines())


def cell(text: str) -> str:
    """A table cell: on one line, its pipes escaped so they cannot start another column."""
    return inline(text).replace("\\", "\\\\").replace("|", "\\|")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(map(cell, cells)) + " |"

    return [line(header), "|" + "---|" * len(header), *map(line, rows)]
