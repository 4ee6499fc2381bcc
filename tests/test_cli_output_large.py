"""``marmot.cli.output.table``: rich for people, plain columns for long listings."""

from __future__ import annotations

from uuid import uuid4

import pytest

from marmot.cli.output import PLAIN_ROWS, table


def test_a_long_table_is_plain_aligned_columns_one_row_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = [str(uuid4()) for _ in range(PLAIN_ROWS + 1)]
    table("many", ["id", "name"], ([i, f"n{k}"] for k, i in enumerate(ids)))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "many"
    assert lines[1].split() == ["id", "name"]
    assert len(lines) == 3 + len(ids)
    # Every id whole on its own line, the names in one column.
    column = lines[3].index("n0")
    for k, (row, automation_id) in enumerate(zip(lines[3:], ids, strict=True)):
        assert row.startswith(automation_id)
        assert row[column:] == f"n{k}"


def test_a_short_table_is_drawn_by_rich(capsys: pytest.CaptureFixture[str]) -> None:
    table("few", ["id", "name"], [["a", None]])
    out = capsys.readouterr().out
    assert "┃" in out or "│" in out
