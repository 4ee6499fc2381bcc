"""The SQLite database under the store: one connection, one lock, migrations, upkeep.

One WAL-mode file in the data dir, shared by the daemon's threads (the lock
serialises them) and opened separately by executor and automation actor
processes. The repositories (automations, events, ...) are built on it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.clock import Clock
from marmot.engine.errors import Conflict

__all__ = ["BUSY_TIMEOUT_S", "Database", "select_in"]

log = logging.getLogger(__name__)

# How long a write waits for the database's write lock before failing. The
# daemon and every automation actor write (appends, checkpoints): with 100
# actors checkpointing at once behind a busy append loop, 5 s was too short.
BUSY_TIMEOUT_S = 30.0

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


class Database:
    """The connection (autocommit; transactions are explicit), its lock and clock.

    Open with ``Database.open``; every method is thread-safe.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.conn = conn
        self.path = path
        self.lock = threading.Lock()
        self._clock = clock
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clock: Clock = SYSTEM_CLOCK) -> Database:
        """Open the database at ``path`` (created if missing; ``schema.migrate``
        brings its tables up to date). ``clock`` stamps ``created``/``updated`` times."""
        where = Path(path)
        where.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            where, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Measured on 100k appends in batches of 500: a 40 MB WAL between
            # checkpoints (default 4 MB) and a 32 MB page cache append ~1.6x faster.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            conn.execute("PRAGMA cache_size = -32768")
        except BaseException:
            conn.close()
            raise
        return cls(conn, where, clock)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and a write transaction; commit on success, roll back on error."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def now_us(self) -> int:
        """The store's clock, in microseconds (for ``created``/``updated`` stamps)."""
        return self._clock.now_us()

    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self.lock:
            version: int = self.conn.execute("SELECT version FROM schema_version").fetchone()[0]
        return version

    # -- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any earlier value."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
                (key, value, value),
            )

    # -- upkeep -------------------------------------------------------------------------

    def start_checkpointer(self, interval_s: float = 1.0) -> None:
        """Move WAL checkpoints off the write path: a background thread with its
        own connection checkpoints (PASSIVE: never blocking writers) every
        ``interval_s``, and this connection stops checkpointing on commit.

        Measured (bench/daemon.py): an automatic checkpoint inside an append
        stalls it for 100-200 ms, which is what publish-to-firing p99 saw.
        """
        if self._checkpointer is not None:
            return
        with self.lock:
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        path = self.path
        stop = self._stop_checkpoints

        def run() -> None:
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
            try:
                while not stop.wait(interval_s):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # reported; the next daemon start restarts it
                log.error("WAL checkpoints stopped: %s", exc)
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=run, name="marmot-wal", daemon=True)
        self._checkpointer.start()

    def wal_checkpoint(self) -> tuple[int, int]:
        """Copy the write-ahead log into the database file and truncate it; returns
        ``(WAL pages, pages copied)``. Writers wait while it runs."""
        with self.lock:
            busy, pages, copied = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise Conflict("the database is busy; try the checkpoint again")
        return int(pages), int(copied)

    def backup(self, destination: str | os.PathLike[str]) -> int:
        """Copy the live database, consistently, to a new file (SQLite's online
        backup); returns its size in bytes. Refuses to overwrite a file."""
        target = Path(destination)
        if target.exists():
            raise Conflict(f"{target} exists; choose a new file for the backup")
        target.parent.mkdir(parents=True, exist_ok=True)
        # A connection of its own: in WAL mode it reads a consistent snapshot
        # while the daemon goes on writing.
        source = sqlite3.connect(self.path, timeout=5.0)
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        return target.stat().st_size

    def close(self) -> None:
        """Stop the checkpointer and close the connection."""
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            self._checkpointer.join(10)
            self._checkpointer = None
        with self.lock:
            self.conn.close()
