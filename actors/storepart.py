"""The base of the parts ``Store`` is made of (incidents, the action log)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager

__all__ = ["StorePart"]


class StorePart:
    """A part of ``Store``: it shares the store's connection, lock and transactions."""

    _conn: sqlite3.Connection
    _lock: threading.Lock

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by EventLog

    def _now_us(self) -> int:
        raise NotImplementedError  # provided by Store
