"""How the CLI prints: rich tables for people, JSON lines for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

# rich is imported where it prints, not here: it takes ~30 ms to import, and
# commands that print JSON lines (``replay``, ``--json``) never need it.


def fail(message: str) -> None:
    """Print an error message to stderr."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(
        f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True
    )


def line(markup: str) -> None:
    """One line of rich markup on stdout (escape any value in it that is not markup)."""
    from rich.console import Console

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


# Past this many rows a table is printed as plain aligned columns: rich lays out
# each cell (about a millisecond a row), which would take seconds for a fleet.
PLAIN_ROWS = 500


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A rich table on stdout; ids and other copy-paste columns stay on one line.
    Longer than ``PLAIN_ROWS``, plain columns (one row a line, nothing wrapped)."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    if len(cells) > PLAIN_ROWS:
        _plain(title, columns, cells)
        return
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left")
    for column in columns:
        if column in _WHOLE:
            grid.add_column(column, no_wrap=True, overflow="ignore")
        else:
            grid.add_column(column, overflow="fold")
    for row in cells:
        grid.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped or redirected: room for whole ids
    console.print(grid)


def _plain(title: str, columns: Sequence[str], cells: list[list[str]]) -> None:
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    out = sys.stdout
    out.write(f"{title}\n")
    for row in [list(columns), ["-" * w for w in widths], *cells]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    out.flush()
