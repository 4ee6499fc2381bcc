"""The durable event log: every accepted event with its sequence number.

It keeps the recent window for the event feed and for replay after a crash.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from uuid import UUID

from marmot.actors.store.database import Database, select_in
from marmot.actors.wire import pack_event, unpack_event
from marmot.engine.models.events import Event
from marmot.engine.timestamps import to_us

# Run by the store's first schema migration. AUTOINCREMENT so that a sequence
# number is never handed out twice, even after trimming the newest rows.
SCHEMA = (
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id BLOB NOT NULL UNIQUE,
        event TEXT NOT NULL,
        occurred INTEGER NOT NULL,
        received INTEGER,
        resource_id TEXT NOT NULL,
        body TEXT NOT NULL
    )
    """,
    # ``body`` holds the event packed as the actors receive it (a BLOB; SQLite
    # keeps a BLOB as it is in a TEXT column).
    # Only time is indexed: every index costs each append (bench/daemon.py),
    # and name or resource filters scan the recent log, newest first.
    "CREATE INDEX events_occurred ON events (occurred)",
)

# One row's placeholders; a statement carries one or many rows.
_ROW_MARKS = "(?, ?, ?, ?, ?, ?)"
_INSERT = (
    f"INSERT INTO events (id, event, occurred, received, resource_id, body) VALUES {_ROW_MARKS}"
)
# (id, event, occurred, received, resource_id, body) as the events table stores them.
_Row = tuple[bytes, str, int, int | None, str, bytes]
_GLOB_MAGIC = re.compile(r"[*?\[]")
# Name patterns matching fewer rows than this are looked up through the name index.
_SELECTIVE_ROWS = 2000


class EventLog:
    """Append, read, filter and trim the event log."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._chunk_rows = _chunk_rows(db.conn)

    def append(self, events: Sequence[Event], bodies: Sequence[bytes] | None = None) -> list[int]:
        """Append events in one transaction; returns their sequence numbers, in order.

        ``bodies``: the events already packed with ``wire.pack_event`` (the
        router packs each event once, for the log and for the actors).
        An event whose id is already in the log is not stored again: its
        existing sequence number is returned, so re-emitting is idempotent.
        """
        if not events:
            return []
        if bodies is None:
            bodies = [pack_event(e) for e in events]
        # Rows are built before taking the lock.
        rows: list[_Row] = [
            (
                e.id.bytes,
                e.event,
                to_us(e.occurred),
                None if e.received is None else to_us(e.received),
                e.resource_id,
                body,
            )
            for e, body in zip(events, bodies, strict=True)
        ]
        with self._db.transaction() as conn:
            # Plain INSERT, not OR IGNORE: an ignored row would still use up a
            # sequence number. A duplicate id is rare; it undoes the batch and
            # takes the slower path that looks the known ids up first.
            conn.execute("SAVEPOINT append")
            try:
                _insert(conn, rows, self._chunk_rows)
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK TO append")
                conn.execute("RELEASE append")
                return _append_new(conn, rows, self._chunk_rows)
            conn.execute("RELEASE append")
            return _last_seqs(conn, len(rows))

    def read_after(self, seq: int, limit: int = 1000) -> list[tuple[int, Event]]:
        """Up to ``limit`` events with a sequence number above ``seq``, oldest first."""
        if limit <= 0:
            return []
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [(s, decode_body(body)) for s, body in rows]

    def known_ids(self, ids: Sequence[UUID]) -> set[UUID]:
        """Which of these event ids are in the log."""
        if not ids:
            return set()
        with self._db.lock:
            rows = select_in(
                self._db.conn, "SELECT id FROM events WHERE id IN ({marks})", [i.bytes for i in ids]
            )
        return {UUID(bytes=row[0]) for row in rows}

    def last_seq(self) -> int:
        """The highest sequence number ever handed out (0 for an empty log).

        Trimming does not lower it: numbers are never reused.
        """
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()
        return 0 if row is None else int(row[0])

    def count(self) -> int:
        """How many events the log holds now."""
        with self._db.lock:
            count: int = self._db.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return count

    def filter(
        self,
        *,
        names: Sequence[str] = (),
        resource_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        descending: bool = True,
        by_seq: bool = False,
    ) -> list[tuple[int, Event]]:
        """Events matching every given filter, ordered by ``occurred`` (then seq),
        or by arrival (``seq``) when ``by_seq``.

        ``names`` are shell-style patterns (``prefect.flow-run.*``); an event
        matches if its name matches any of them. ``since`` and ``until`` bound
        ``occurred`` inclusively. Returns at most ``limit`` ``(seq, event)`` pairs,
        newest first unless ``descending`` is false.
        """
        if limit <= 0:
            return []
        clauses: list[str] = []
        params: list[str | int] = []
        if resource_id is not None:
            clauses.append("resource_id = ?")
            params.append(resource_id)
        if since is not None:
            clauses.append("occurred >= ?")
            params.append(to_us(since))
        if until is not None:
            clauses.append("occurred <= ?")
            params.append(to_us(until))
        order = "DESC" if descending else "ASC"
        found: list[tuple[int, bytes]] = []
        with self._db.lock:
            needs_match = False
            if names:
                name_sql, name_params, needs_match = _name_prefilter(
                    names, self._name_column(names)
                )
                clauses.append(name_sql)
                params.extend(name_params)
            where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
            ordering = f"seq {order}" if by_seq else f"occurred {order}, seq {order}"
            sql = f"SELECT seq, event, body FROM events{where} ORDER BY {ordering}"
            if not needs_match:
                sql += " LIMIT ?"
                params.append(limit)
            cursor = self._db.conn.execute(sql, params)
            try:
                for seq, name, body in cursor:
                    if needs_match and not any(fnmatchcase(name, p) for p in names):
                        continue
                    found.append((seq, body))
                    if len(found) >= limit:
                        break
            finally:
                cursor.close()
        return [(seq, decode_body(body)) for seq, body in found]

    def _name_column(self, names: Sequence[str]) -> str:
        """``event`` if the name patterns are selective enough to use its index, else
        ``+event`` (which keeps SQLite off that index).

        Measured on 100k events: via the name index, a pattern matching most of
        the log costs 170 ms (a table lookup per match to sort by ``occurred``);
        walking the ``occurred`` index instead costs 0.2 ms, but 38 ms for a rare
        name. A cheap count on the covering name index picks the right plan.
        """
        name_sql, name_params, _ = _name_prefilter(names, "event")
        probe = f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {name_sql} LIMIT ?)"
        count: int = self._db.conn.execute(probe, [*name_params, _SELECTIVE_ROWS]).fetchone()[0]
        return "event" if count < _SELECTIVE_ROWS else "+event"

    def trim(self, *, keep_after_seq: int | None = None, older_than: datetime | None = None) -> int:
        """Delete events at or below ``keep_after_seq`` and occurred before ``older_than``.

        With both, only events meeting both conditions go (retention never
        removes what replay after the oldest checkpoint still needs). Returns
        how many rows were deleted; raises ``ValueError`` if neither is given.
        """
        clauses: list[str] = []
        params: list[int] = []
        if keep_after_seq is not None:
            clauses.append("seq <= ?")
            params.append(keep_after_seq)
        if older_than is not None:
            clauses.append("occurred < ?")
            params.append(to_us(older_than))
        if not clauses:
            raise ValueError("trim needs keep_after_seq or older_than")
        with self._db.transaction() as conn:
            deleted: int = conn.execute(
                f"DELETE FROM events WHERE {' AND '.join(clauses)}", params
            ).rowcount
        return deleted


def decode_body(body: bytes) -> Event:
    """The event a log row's ``body`` holds (packed wire bytes). Events were
    validated when they were accepted, so they are rebuilt without validating again."""
    return unpack_event(body)


# Rows go in with as few statements as possible. SQLite works on a statement
# with Python's lock released, and ``executemany`` runs one statement per row:
# it releases and takes the lock back for every row. Measured with another
# thread busy in Python (the daemon's event loop, while a big group commit
# runs on a worker thread): ~1.3 ms a row with ``executemany``, ~50 us in
# statements of 512 rows. Statement sizes are 512 and powers of two below it,
# so a handful of statements are prepared and cached, never one per size.
_CHUNK_ROWS = 512


def _chunk_rows(conn: sqlite3.Connection) -> int:
    """The most rows one statement may carry here: 512, or fewer where SQLite
    allows fewer host parameters (a power of two)."""
    columns = _ROW_MARKS.count("?")
    most = min(_CHUNK_ROWS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // columns)
    return 1 << (most.bit_length() - 1)


@functools.lru_cache(maxsize=16)
def _insert_sql(rows: int) -> str:
    return _INSERT + f", {_ROW_MARKS}" * (rows - 1)


def _insert(conn: sqlite3.Connection, rows: Sequence[_Row], chunk_rows: int) -> None:
    """Insert rows in order (so AUTOINCREMENT numbers them in order) in few statements."""
    start, total = 0, len(rows)
    while start < total:
        left = total - start
        size = chunk_rows if left >= chunk_rows else 1 << (left.bit_length() - 1)
        conn.execute(_insert_sql(size), [v for row in rows[start : start + size] for v in row])
        start += size


def _last_seqs(conn: sqlite3.Connection, count: int) -> list[int]:
    """The sequence numbers of the ``count`` rows just inserted, in order.

    Nobody else writes inside our transaction, so AUTOINCREMENT handed them
    consecutive numbers ending at the last one.
    """
    last: int = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    return list(range(last - count + 1, last + 1))


def _append_new(conn: sqlite3.Connection, rows: list[_Row], chunk_rows: int) -> list[int]:
    """Insert the rows whose id is not yet logged; returns every row's sequence number."""
    seq_of: dict[bytes, int] = {}
    ids = list(dict.fromkeys(row[0] for row in rows))
    seq_of.update(select_in(conn, "SELECT id, seq FROM events WHERE id IN ({marks})", ids))
    fresh: dict[bytes, _Row] = {}
    for row in rows:
        if row[0] not in seq_of:
            fresh.setdefault(row[0], row)  # the first of repeats within the batch wins
    if fresh:
        _insert(conn, list(fresh.values()), chunk_rows)
        seq_of.update(zip(fresh, _last_seqs(conn, len(fresh)), strict=True))
    return [seq_of[row[0]] for row in rows]


def _name_prefilter(patterns: Sequence[str], column: str) -> tuple[str, list[str], bool]:
    """An index-friendly SQL test for event names, its parameters, and whether rows
    still need matching in Python.

    Each pattern becomes ``column = name`` (no wildcards) or ``column GLOB
    'prefix*'`` on its literal prefix; only patterns with wildcards beyond a
    trailing ``*`` need the exact ``fnmatchcase`` check afterwards.
    """
    tests: list[str] = []
    params: list[str] = []
    needs_match = False
    for pattern in patterns:
        prefix = _GLOB_MAGIC.split(pattern, maxsplit=1)[0]
        if prefix == pattern:
            tests.append(f"{column} = ?")
            params.append(pattern)
        else:
            # The prefix holds no GLOB metacharacters, so this is "starts with".
            tests.append(f"{column} GLOB ?")
            params.append(prefix + "*")
            needs_match = needs_match or pattern != prefix + "*"
    return f"({' OR '.join(tests)})", params, needs_match
