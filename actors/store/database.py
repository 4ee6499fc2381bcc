"""The SQLite database under the store: one connection, one lock, migrations, upkeep.

One WAL-mode file in the data dir, shared by the daemon's threads (the lock
serialises them) and opened separately by executor and automation actor
processes. The repositories (automations, events, ...) are built on it.

A write the disk or the folder refuses raises a ``StorageFailed`` (``StorageFull``
for a full disk) instead of SQLite's error, and ``fault`` reports it until a
write succeeds again; a data folder deleted or replaced since the database was
opened fails every write from then on with ``StorageLost``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.store.faults import FolderIdentity, storage_failure
from marmot.engine.clock import Clock
from marmot.engine.errors import Conflict, StorageFailed, StorageLost

__all__ = ["BUSY_TIMEOUT_S", "Database", "WriteBusy", "select_in"]

log = logging.getLogger(__name__)

# How long a write waits for the database's write lock before failing. The
# daemon and every automation actor write (appends, checkpoints): with 100
# actors checkpointing at once behind a busy append loop, 5 s was too short.
BUSY_TIMEOUT_S = 30.0

# Well under SQLite's limit on bound parameters in one statement.
_VALUES_PER_QUERY = 500

# A WAL that grew while checkpoints failed (a full disk) is cut back to this
# size when it is next reset; in normal running the background checkpointer
# keeps it far smaller.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

# A failing WAL checkpoint is tried again after a back-off doubling up to this.
CHECKPOINT_MAX_BACKOFF_S = 10.0

# The meta key ``check_writable`` writes.
_PROBE_KEY = "storage_probe"


def select_in(conn: sqlite3.Connection, query: str, values: Sequence[Any]) -> list[Any]:
    """The rows of ``query``, whose ``IN ({marks})`` takes ``values``, run in
    chunks so no statement binds too many parameters."""
    rows: list[Any] = []
    for start in range(0, len(values), _VALUES_PER_QUERY):
        chunk = list(values[start : start + _VALUES_PER_QUERY])
        rows += conn.execute(query.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
    return rows


class WriteBusy(Exception):
    """A write that was not to wait found the write lock taken (by another thread
    of this process or another process): nothing was written."""


class Database:
    """The connection (autocommit; transactions are explicit), its lock and clock.

    Open with ``Database.open``; every method is thread-safe.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        clock: Clock = SYSTEM_CLOCK,
        *,
        identity: FolderIdentity | None = None,
    ) -> None:
        self.conn = conn
        self.path = path
        self.lock = threading.Lock()
        self._clock = clock
        self._identity = identity if identity is not None else FolderIdentity.of(path)
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        # The last write refused (until one succeeds), the last checkpoint that
        # failed for want of storage (until one succeeds), and a lost folder (for good).
        self._write_fault: StorageFailed | None = None
        self._checkpoint_fault: StorageFailed | None = None
        self._lost: StorageLost | None = None
        self._refusals = 0  # writes refused since the last one accepted
        # Writes and checkpoints refused, by error code (read as a metric).
        self.failures: Counter[str] = Counter()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clock: Clock = SYSTEM_CLOCK) -> Database:
        """Open the database at ``path`` (created if missing; ``schema.migrate``
        brings its tables up to date). ``clock`` stamps ``created``/``updated`` times.

        Raises ``StorageFailed`` (``StorageFull`` on a full disk) naming the folder
        when it cannot be created, opened or written.
        """
        where = Path(path)
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                where, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise _opening_failure(exc, where) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Measured on 100k appends in batches of 500: a 40 MB WAL between
            # checkpoints (default 4 MB) and a 32 MB page cache append ~1.6x faster.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            conn.execute("PRAGMA cache_size = -32768")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            identity = FolderIdentity.of(where)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError | sqlite3.Error):
                raise _opening_failure(exc, where) from exc
            raise
        return cls(conn, where, clock, identity=identity)

    @property
    def folder(self) -> Path:
        """The data folder the database file is in."""
        return self.path.parent

    @property
    def fault(self) -> StorageFailed | None:
        """Why the store cannot keep what it is given now, or None: the data folder
        lost, the last write refused (until a write succeeds), or WAL checkpoints
        failing for want of space (until one succeeds)."""
        return self._lost or self._write_fault or self._checkpoint_fault

    @contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """Hold the lock and a write transaction; commit on success, roll back on error.

        Raises ``StorageFull`` when the disk refuses the write, another
        ``StorageFailed`` when the folder does (nothing is committed either way),
        and ``StorageLost``, before committing, once the data folder was deleted or
        replaced since the database was opened (checked on every write: two ``stat``
        calls, so nothing is acknowledged that went to a deleted file).
        Without ``wait``, raises ``WriteBusy`` at once if another thread or process
        holds the write lock (for callers on an event loop, which must not block).
        """
        if not self.lock.acquire(blocking=wait):
            raise WriteBusy("the database is being written by another thread")
        try:
            if self._lost is not None:
                raise self._lost
            try:
                if self.conn.in_transaction:  # left open by a rollback that failed
                    self.conn.execute("ROLLBACK")
                self._begin(wait)
                try:
                    yield self.conn
                    self._identity.check()
                    self.conn.execute("COMMIT")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, StorageFailed) as exc:
                failure = self._refused(exc)
                if failure is None or failure is exc:
                    raise
                raise failure from exc
            if self._write_fault is not None:
                log.warning(
                    "writes to %s accepted again after %d refused", self.folder, self._refusals
                )
                self._write_fault, self._refusals = None, 0
        finally:
            self.lock.release()

    def _begin(self, wait: bool) -> None:
        if wait:
            self.conn.execute("BEGIN IMMEDIATE")
            return
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise WriteBusy("another process holds the database's write lock") from exc
            raise
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def _refused(self, exc: BaseException) -> StorageFailed | None:
        """Record a write the storage refused (None: ``exc`` is no storage failure)."""
        failure = storage_failure(exc, self.folder)
        if failure is None:
            return None
        self.failures[failure.code] += 1
        self._refusals += 1
        if isinstance(failure, StorageLost):
            if self._lost is None:
                log.error("%s", failure.message, extra={"folder": str(self.folder)})
            self._lost = failure
            self._stop_checkpoints.set()  # nothing to fold into a file that is gone
        elif self._write_fault is None:
            log.error("writes refused: %s", failure.message, extra={"folder": str(self.folder)})
            self._write_fault = failure
        return failure

    def check_identity(self) -> None:
        """Raise ``StorageLost`` (and fail every write from now on) when the data folder
        or the database file was deleted or replaced since the database was opened."""
        try:
            self._identity.check()
        except StorageLost as exc:
            with self.lock:
                self._refused(exc)
            raise

    def check_writable(self) -> None:
        """Write a probe row (in the meta table); raises the ``StorageFailed`` that
        refuses it. One that succeeds ends a write fault, so a daemon whose writes
        were refused finds out by itself when space is back."""
        self.set_meta(_PROBE_KEY, str(self.now_us()))

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

        A checkpoint that fails (a full disk: the database file cannot grow) is
        tried again after a back-off doubling up to ``CHECKPOINT_MAX_BACKOFF_S``,
        for as long as the database is open; one that fails for want of storage
        is reported by ``fault`` until one succeeds.

        Measured (bench/daemon.py): an automatic checkpoint inside an append
        stalls it for 100-200 ms, which is what publish-to-firing p99 saw.
        """
        if self._checkpointer is not None:
            return
        with self.lock:
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpointer = threading.Thread(
            target=self._checkpoint_forever, args=(interval_s,), name="marmot-wal", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_forever(self, interval_s: float) -> None:
        conn: sqlite3.Connection | None = None
        delay_s, failed = interval_s, 0
        try:
            while not self._stop_checkpoints.wait(delay_s):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    failed += 1
                    delay_s = min(max(delay_s, interval_s) * 2, CHECKPOINT_MAX_BACKOFF_S)
                    self._checkpoint_failed(exc, failed, delay_s)
                    continue
                if failed:
                    log.warning("WAL checkpoints resumed after %d failed", failed)
                    self._checkpoint_fault = None
                delay_s, failed = interval_s, 0
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint_failed(self, exc: sqlite3.Error, failed: int, delay_s: float) -> None:
        failure = storage_failure(exc, self.folder)
        self.failures["wal_checkpoint"] += 1
        if failure is not None and not isinstance(failure, StorageLost):
            self._checkpoint_fault = failure
        if failed == 1:
            log.error(
                "WAL checkpoint failed (tried again with back-off up to %g s): %s",
                CHECKPOINT_MAX_BACKOFF_S,
                exc,
                extra={"folder": str(self.folder)},
            )
        else:
            log.debug("WAL checkpoint failed again (%d in a row; next in %g s)", failed, delay_s)

    def wal_checkpoint(self) -> tuple[int, int]:
        """Copy the write-ahead log into the database file and truncate it; returns
        ``(WAL pages, pages copied)``. Writers wait while it runs."""
        with self.lock:
            try:
                row = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                failure = storage_failure(exc, self.folder)
                if failure is None:
                    raise
                raise failure from exc
        busy, pages, copied = row
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


def _opening_failure(exc: OSError | sqlite3.Error, path: Path) -> StorageFailed:
    """Why the database at ``path`` could not be opened, naming its folder."""
    failure = storage_failure(exc, path.parent)
    if failure is not None:
        return failure
    return StorageFailed(
        f"cannot open the database {path.name} in the data folder {path.parent}: {exc}",
        details={"folder": str(path.parent)},
    )
