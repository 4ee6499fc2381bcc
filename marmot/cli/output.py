"""How the CLI prints: rich tables for people, JSON lines for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

_err = Console(stderr=True, highlight=False)


def fail(message: str) -> None:
    """Print an error message to stderr."""
    _err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)


def line(markup: str) -> None:
    """One line of rich markup on stdout (escape any value in it that is not markup)."""
    Console(highlight=False).print(markup, soft_wrap=True)


def json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """One compact JSON object per line on stdout."""
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, sort_keys=True, default=str) + "\n")
    out.flush()


# Columns that are copied and pasted whole: never wrapped onto two lines (the
# other columns give way).
_WHOLE = frozenset({"id", "seq", "slug", "url"})


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A rich table on stdout; ids and other copy-paste columns stay on one line."""
    grid = Table(title=title, title_justify="left")
    for column in columns:
        if column in _WHOLE:
            grid.add_column(column, no_wrap=True, overflow="ignore")
        else:
            grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped or redirected: room for whole ids
    console.print(grid)
