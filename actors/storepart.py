"""The base of the parts ``Store`` is made of (incidents, the action log)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["StorePart", "select_in"]

# Well under SQLite's limit on bound parameters in one statement.
_VALUES_PER_QUERY = 500


def select_in(conn: sqlite3.Connection, query: str, values: Sequence[Any]) -> list[Any]:
    """The rows of ``query``, whose ``IN ({marks})`` takes ``values``, run in
    chunks so no statement binds too many parameters."""
    rows: list[Any] = []
    for start in range(0, len(values), _VALUES_PER_QUERY):
        chunk = list(values[start : start + _VALUES_PER_QUERY])
        rows += conn.execute(query.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
    return rows


class StorePart:
    """A part of ``Store``: it shares the store's connection, lock and transactions."""

    _conn: sqlite3.Connection
    _lock: threading.Lock

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by EventLog

    def _now_us(self) -> int:
        raise NotImplementedError  # provided by Store
