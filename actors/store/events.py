"""The durable event log: every accepted event with its sequence number.

It keeps the recent window for the event feed and for replay after a crash.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import translate
from uuid import UUID

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.store.database import Database, select_in
from marmot.actors.wire import pack, pack_event, unpack, unpack_event
from marmot.engine.clock import Clock
from marmot.engine.models.events import Event
from marmot.engine.timestamps import to_us

__all__ = ["DUPLICATE_ID_OTHER_CONTENT", "EventLog", "LogPage", "LogPosition", "decode_body"]

log = logging.getLogger(__name__)

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
# Name patterns tested in SQL, at most. SQLite parses ``a OR b OR ...`` into a
# tree as deep as its terms and refuses one over 1000 levels ("expression tree
# is too large"); past this bound, plain names go in ``IN`` lists and patterns
# with wildcards are matched in Python as the rows are read.
_SQL_PATTERNS = 64
# Plain names per ``IN`` list (well under SQLite's bound on parameters).
_NAMES_PER_LIST = 500
# The drop reason (``marmot_events_dropped``) of an event re-sent with a known id
# but other content: it is acknowledged with the first one's sequence number.
DUPLICATE_ID_OTHER_CONTENT = "duplicate_id_other_content"
# At most one log line about such events per this many seconds.
_CONFLICT_LOG_INTERVAL_S = 10.0
# The fields of a packed event (``wire.event_to_wire``) that make its content:
# all but ``received``, which the daemon stamps anew on every delivery.
_CONTENT_FIELDS = 7


@dataclass(frozen=True, slots=True)
class LogPosition:
    """A place in the log's order: a row's sequence number and ``occurred`` (µs).

    A page of ``EventLog.page`` starts right after it, in the page's order
    (``occurred`` then ``seq``, or ``seq`` alone with ``by_seq``).
    """

    seq: int
    occurred_us: int

    @classmethod
    def of(cls, seq: int, event: Event) -> LogPosition:
        """The position of the row ``(seq, event)``."""
        return cls(seq, to_us(event.occurred))


@dataclass(frozen=True, slots=True)
class LogPage:
    """Rows of ``EventLog.page``, and whether more may match past the last one."""

    rows: list[tuple[int, Event]]
    has_more: bool


class EventLog:
    """Append, read, filter and trim the event log."""

    def __init__(self, db: Database, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._chunk_rows = _chunk_rows(db.conn)
        # Plain names one statement may bind (the other filters take a few more).
        self._max_names = db.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 16
        self._clock = clock
        self._on_conflicts: Callable[[int], object] = lambda count: None
        # Re-sent ids with other content not yet logged, and when the last line went out.
        self._conflicts_unlogged = 0
        self._conflict_logged_at: float | None = None

    def count_conflicts_with(self, counter: Callable[[int], object]) -> None:
        """Tell ``counter(n)`` of every ``n`` events ``append`` acknowledged without
        storing them because their id was logged with other content (the daemon
        counts them as ``marmot_events_dropped{reason="duplicate_id_other_content"}``)."""
        self._on_conflicts = counter

    def append(
        self, events: Sequence[Event], bodies: Sequence[bytes] | None = None, *, wait: bool = True
    ) -> list[int]:
        """Append events in one transaction; returns their sequence numbers, in order.

        ``bodies``: the events already packed with ``wire.pack_event`` (the
        router packs each event once, for the log and for the actors).
        An event whose id is already in the log (or earlier in the batch) is
        not stored again: its existing sequence number is returned, so
        re-emitting is idempotent, as Prefect's events are. This holds also
        when the content differs (other name, time, resources or payload;
        ``received`` aside): the first content stays and the new one is
        dropped. Such drops are counted (``count_conflicts_with``) and logged,
        at most one line per 10 s; the comparison costs only on this rare
        path, where the stored bodies are read back. Without ``wait``, raises
        ``WriteBusy`` (nothing written) if the write lock is taken.
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
        # Plain INSERT, not OR IGNORE: an ignored row would still use up a
        # sequence number. A duplicate id is rare: it rolls the transaction back,
        # and a second one takes the slower path that looks the known ids up first.
        try:
            with self._db.transaction(wait=wait) as conn:
                last = _insert(conn, rows, self._chunk_rows)
            return list(range(last - len(rows) + 1, last + 1))
        except sqlite3.IntegrityError:
            pass
        with self._db.transaction(wait=wait) as conn:
            seqs, conflicts = _append_new(conn, rows, self._chunk_rows)
        if conflicts:
            self._report_conflicts(conflicts)
        return seqs

    def _report_conflicts(self, conflicts: list[tuple[UUID, int]]) -> None:
        """Count events dropped as re-sent ids with other content; log at most one
        line per interval, with how many there were since the last one."""
        self._on_conflicts(len(conflicts))
        self._conflicts_unlogged += len(conflicts)
        now = self._clock.monotonic()
        last = self._conflict_logged_at
        if last is not None and now - last < _CONFLICT_LOG_INTERVAL_S:
            return
        event_id, seq = conflicts[0]
        log.warning(
            "%d event(s) re-sent with a logged id but other content were acknowledged "
            "with the first one's sequence number and dropped (e.g. id %s, seq %d)",
            self._conflicts_unlogged,
            event_id,
            seq,
            extra={"event_id": str(event_id), "seq": seq, "reason": DUPLICATE_ID_OTHER_CONTENT},
        )
        self._conflicts_unlogged = 0
        self._conflict_logged_at = now

    def read_after(self, seq: int, limit: int = 1000) -> list[tuple[int, Event]]:
        """Up to ``limit`` events with a sequence number above ``seq``, oldest first."""
        if limit <= 0:
            return []
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [(s, decode_body(body)) for s, body in rows]

    def read_seqs(self, seqs: Sequence[int]) -> list[tuple[int, bytes]]:
        """The packed rows with these sequence numbers (those still in the log), in order."""
        if not seqs:
            return []
        with self._db.lock:
            rows = select_in(
                self._db.conn, "SELECT seq, body FROM events WHERE seq IN ({marks})", list(seqs)
            )
        return sorted((int(seq), bytes(body)) for seq, body in rows)

    def known_ids(self, ids: Sequence[UUID]) -> set[UUID]:
        """Which of these event ids are in the log."""
        if not ids:
            return set()
        with self._db.lock:
            rows = select_in(
                self._db.conn, "SELECT id FROM events WHERE id IN ({marks})", [i.bytes for i in ids]
            )
        return {UUID(bytes=row[0]) for row in rows}

    def find_ids(self, ids: Sequence[UUID]) -> list[tuple[int, Event]]:
        """The logged events with these ids (those still in the log), in arrival order."""
        if not ids:
            return []
        with self._db.lock:
            rows = select_in(
                self._db.conn,
                "SELECT seq, body FROM events WHERE id IN ({marks})",
                [i.bytes for i in ids],
            )
        return sorted((int(seq), decode_body(body)) for seq, body in rows)

    def first_seq_since(self, received: datetime) -> int:
        """The sequence number before the first event received at or after ``received``
        (events without a ``received`` stamp count by ``occurred``); the log's last
        sequence number when there is none."""
        cutoff = to_us(received)
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT min(seq) FROM events WHERE coalesce(received, occurred) >= ?", (cutoff,)
            ).fetchone()
        if row is None or row[0] is None:
            return self.last_seq()
        return int(row[0]) - 1

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

        ``names`` are shell-style patterns (``prefect.flow-run.*``), any number
        of them; an event matches if its name matches any of them. ``since`` and
        ``until`` bound ``occurred`` inclusively. Returns at most ``limit``
        ``(seq, event)`` pairs, newest first unless ``descending`` is false.
        """
        return self.page(
            names=names,
            resource_id=resource_id,
            since=since,
            until=until,
            limit=limit,
            descending=descending,
            by_seq=by_seq,
        ).rows

    def page(
        self,
        *,
        names: Sequence[str] = (),
        resource_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        descending: bool = True,
        by_seq: bool = False,
        after: LogPosition | None = None,
        max_bytes: int | None = None,
    ) -> LogPage:
        """``filter``'s events from just past ``after`` on (in the same order), at
        most ``limit`` of them and as many as their stored bodies fit in
        ``max_bytes`` (but at least one).

        ``has_more`` tells whether an event past the page's last one matches: the
        next page starts after ``LogPosition.of(*rows[-1])``.
        """
        if limit <= 0:
            return LogPage([], False)
        clauses, params = _where(resource_id, since, until)
        if after is not None:
            op = "<" if descending else ">"
            if by_seq:
                clauses.append(f"seq {op} ?")
                params.append(after.seq)
            else:
                # A row value: SQLite seeks the occurred index to it (an OR would scan).
                clauses.append(f"(occurred, seq) {op} (?, ?)")
                params += [after.occurred_us, after.seq]
        order = "DESC" if descending else "ASC"
        ordering = f"seq {order}" if by_seq else f"occurred {order}, seq {order}"
        budget = max_bytes if max_bytes is not None else float("inf")
        found: list[tuple[int, bytes]] = []
        has_more = False
        with self._db.lock:
            rows = self._rows(clauses, params, names, ordering, limit)
            try:
                size = 0
                for seq, body in rows:
                    if len(found) >= limit or (found and size + len(body) > budget):
                        has_more = True
                        break
                    found.append((seq, body))
                    size += len(body)
            finally:
                rows.close()
        return LogPage([(seq, decode_body(body)) for seq, body in found], has_more)

    def _rows(
        self,
        clauses: list[str],
        params: list[str | int],
        patterns: Sequence[str],
        ordering: str,
        limit: int,
    ) -> Generator[tuple[int, bytes], None, None]:
        """``(seq, body)`` of the rows matching ``clauses`` and any of ``patterns``
        (all rows when there are none), in ``ordering``; the caller holds the lock
        and closes the generator."""
        clauses, params = list(clauses), list(params)
        match: Callable[[str], bool] | None = None
        if patterns:
            if len(patterns) <= _SQL_PATTERNS:
                name_sql, name_params, needs_match = _name_prefilter(
                    patterns, self._name_column(patterns)
                )
            else:
                name_sql, name_params, needs_match = _names_in(patterns, self._max_names)
            if name_sql:
                clauses.append(name_sql)
                params.extend(name_params)
            if needs_match:
                match = _matcher(patterns)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT seq, event, body FROM events{where} ORDER BY {ordering}"
        if match is None:
            sql += " LIMIT ?"
            params.append(limit + 1)  # one more tells whether the page has a next one
        cursor = self._db.conn.execute(sql, params)
        try:
            for seq, name, body in cursor:
                if match is None or match(name):
                    yield seq, body
        finally:
            cursor.close()

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


def _insert(conn: sqlite3.Connection, rows: Sequence[_Row], chunk_rows: int) -> int:
    """Insert rows in order (so AUTOINCREMENT numbers them in order) in few statements;
    returns the last one's sequence number.

    Nobody else writes inside our transaction, so AUTOINCREMENT hands the rows
    consecutive numbers ending at that one.
    """
    start, total, last = 0, len(rows), 0
    while start < total:
        left = total - start
        size = chunk_rows if left >= chunk_rows else 1 << (left.bit_length() - 1)
        cursor = conn.execute(
            _insert_sql(size), [v for row in rows[start : start + size] for v in row]
        )
        if cursor.lastrowid is None:  # never for an INSERT; a wrong number must not pass
            raise RuntimeError("the event log's insert gave no sequence number")
        last = cursor.lastrowid
        start += size
    return last


def _append_new(
    conn: sqlite3.Connection, rows: list[_Row], chunk_rows: int
) -> tuple[list[int], list[tuple[UUID, int]]]:
    """Insert the rows whose id is not yet logged; returns every row's sequence
    number, and the id and sequence number of each row dropped although its
    content differs from the one logged under its id."""
    ids = list(dict.fromkeys(row[0] for row in rows))
    logged = select_in(conn, "SELECT id, seq, body FROM events WHERE id IN ({marks})", ids)
    seq_of: dict[bytes, int] = {event_id: seq for event_id, seq, _ in logged}
    kept: dict[bytes, bytes] = {event_id: body for event_id, _, body in logged}
    fresh: dict[bytes, _Row] = {}
    for row in rows:
        if row[0] not in seq_of:
            fresh.setdefault(row[0], row)  # the first of repeats within the batch wins
    if fresh:
        last = _insert(conn, list(fresh.values()), chunk_rows)
        seq_of.update(zip(fresh, range(last - len(fresh) + 1, last + 1), strict=True))
        kept.update((event_id, row[5]) for event_id, row in fresh.items())
    conflicts = [
        (UUID(bytes=row[0]), seq_of[row[0]])
        for row in rows
        if row[5] != kept[row[0]] and _content(row[5]) != _content(kept[row[0]])
    ]
    return [seq_of[row[0]] for row in rows], conflicts


def _content(body: bytes) -> bytes:
    """A packed event without its ``received`` stamp: what a re-sent copy must repeat."""
    return pack(unpack(body)[:_CONTENT_FIELDS])


def _where(
    resource_id: str | None, since: datetime | None, until: datetime | None
) -> tuple[list[str], list[str | int]]:
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
    return clauses, params


def _matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Whether a name matches any of the shell-style ``patterns``, as ``fnmatchcase``.

    Patterns are filed by their literal prefix: a name is looked up by its own
    prefixes of those lengths (a set lookup for each length), and the patterns
    filed there with wildcards past a trailing ``*`` run as one expression. So
    a thousand patterns cost about as much as a few.
    """
    exact: set[str] = set()
    filed: dict[int, dict[str, list[str] | None]] = {}  # None: any name with the prefix
    for pattern in patterns:
        prefix = _GLOB_MAGIC.split(pattern, maxsplit=1)[0]
        if prefix == pattern:
            exact.add(pattern)
            continue
        by_prefix = filed.setdefault(len(prefix), {})
        globs = by_prefix.setdefault(prefix, [])
        if pattern == prefix + "*" or globs is None:
            by_prefix[prefix] = None
        else:
            globs.append(pattern)
    tests = [
        (length, {prefix: _one_expression(globs) for prefix, globs in by_prefix.items()})
        for length, by_prefix in sorted(filed.items())
    ]

    def match(name: str) -> bool:
        if name in exact:
            return True
        for length, by_prefix in tests:
            prefix = name[:length]
            if prefix in by_prefix:
                test = by_prefix[prefix]
                if test is None or test(name) is not None:
                    return True
        return False

    return match


def _one_expression(globs: list[str] | None) -> Callable[[str], object] | None:
    if globs is None:
        return None
    return re.compile("|".join(f"(?:{translate(glob)})" for glob in globs)).match


def _names_in(patterns: Sequence[str], most: int) -> tuple[str, list[str], bool]:
    """For more patterns than SQL should test one by one: the plain names as ``IN``
    lists when every pattern is one and there are at most ``most`` (else no SQL
    test), its parameters, and whether rows need matching in Python."""
    names = list(dict.fromkeys(patterns))
    if len(names) > most or any(_GLOB_MAGIC.search(p) for p in names):
        return "", [], True
    lists = [names[i : i + _NAMES_PER_LIST] for i in range(0, len(names), _NAMES_PER_LIST)]
    sql = " OR ".join(f"event IN ({','.join('?' * len(chunk))})" for chunk in lists)
    return f"({sql})", names, False


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
