"""The action log: one row per action of a firing, keyed by its idempotency key.

An executor claims an action (inserts its row, status ``claimed``) before
it runs it, so a firing delivered twice acts once. The claim records which
executor incarnation owns it and the job it came from (the automation as it
was, the firing and its ``automation.triggered`` event), so an action whose
executor died before it finished is adopted and carried out by the next
incarnation (or, after a daemon restart, by the new pool).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from marmot.actors.store.database import Database, select_in
from marmot.engine.errors import NotFound
from marmot.engine.timestamps import from_us

__all__ = ["ActionLog", "ActionRecord", "owner_name"]

_INSERT = (
    "INSERT OR IGNORE INTO actions (key, firing_id, automation_id, action_index, status,"
    " detail, created, updated, owner, job) VALUES (?, ?, ?, ?, 'claimed', '', ?, ?, ?, ?)"
)


def owner_name(owner: str) -> str:
    """The executor name of an owner ``name#incarnation``."""
    return owner.partition("#")[0]


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One action of one firing, as the action log recorded it."""

    key: str
    firing_id: str
    automation_id: str
    action_index: int
    status: str
    detail: str
    created: datetime
    updated: datetime


class ActionLog:
    """Claim, finish, adopt and read actions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(self, key: str, *, firing_id: str, automation_id: str, action_index: int) -> bool:
        """Record that the action with idempotency ``key`` is being carried out.

        Returns True if this call claimed it, False if it was already recorded
        (a duplicate delivery, which must not act again).
        """
        return bool(self.claim_many([(key, firing_id, automation_id, action_index)]))

    def claim_many(
        self,
        claims: Sequence[tuple[str, str, str, int]],
        *,
        owner: str = "",
        jobs: Mapping[str, bytes] | None = None,
    ) -> set[str]:
        """Claim many actions in one transaction: ``(key, firing id, automation id,
        action index)`` each, held by ``owner`` (``executor-name#incarnation``),
        with the job of each firing (``jobs`` by firing id) kept until the action
        ends. Returns the keys this call claimed (the others were recorded before).
        """
        if not claims:
            return set()
        jobs = jobs or {}
        now = self._db.now_us()
        claimed: set[str] = set()
        with self._db.transaction() as conn:
            for key, firing_id, automation_id, action_index in claims:
                row = (key, firing_id, automation_id, action_index, now, now, owner)
                if conn.execute(_INSERT, (*row, jobs.get(firing_id))).rowcount == 1:
                    claimed.add(key)
        return claimed

    def claimed_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of these idempotency keys the action log holds (claimed or finished)."""
        with self._db.lock:
            rows = select_in(self._db.conn, "SELECT key FROM actions WHERE key IN ({marks})", keys)
        return {row[0] for row in rows}

    def records(self, keys: Sequence[str]) -> list[ActionRecord]:
        """The action records with these idempotency keys (those the log holds)."""
        with self._db.lock:
            rows = select_in(
                self._db.conn,
                "SELECT key, firing_id, automation_id, action_index, status, detail, created,"
                " updated FROM actions WHERE key IN ({marks})",
                keys,
            )
        return [_record(row) for row in rows]

    def finish_many(self, results: Sequence[tuple[str, str, str]]) -> None:
        """Record how many claimed actions ended, ``(key, status, detail)`` each,
        in one transaction (their jobs are dropped)."""
        if not results:
            return
        now = self._db.now_us()
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE actions SET status = ?, detail = ?, updated = ?, job = NULL WHERE key = ?",
                [(status, detail, now, key) for key, status, detail in results],
            )

    def finish(self, key: str, status: str, detail: str = "") -> None:
        """Record how a claimed action ended; raises ``NotFound`` if it was never claimed."""
        now = self._db.now_us()
        with self._db.transaction() as conn:
            changed = conn.execute(
                "UPDATE actions SET status = ?, detail = ?, updated = ?, job = NULL WHERE key = ?",
                (status, detail, now, key),
            ).rowcount
            if not changed:
                raise NotFound(f"no action claimed with key {key!r}", details=key)

    def orphan_claims(self, names: Sequence[str]) -> int:
        """Hand every unfinished claim to one of the executors ``names`` (spread by
        row), as orphans for them to adopt; for a daemon start, when no executor of
        the last run is alive. Returns how many claims were handed over."""
        if not names:
            return 0
        with self._db.transaction() as conn:
            rowids = [
                row[0]
                for row in conn.execute(
                    "SELECT rowid FROM actions WHERE status = 'claimed' AND job IS NOT NULL"
                )
            ]
            conn.executemany(
                "UPDATE actions SET owner = ? WHERE rowid = ?",
                [(f"{names[rowid % len(names)]}#orphan", rowid) for rowid in rowids],
            )
        return len(rowids)

    def adopt_claims(self, owner: str) -> list[tuple[str, int, bytes]]:
        """Take over the unfinished claims of earlier incarnations of ``owner``'s
        executor (same name, other incarnation): ``(key, action index, job)``
        each, now held by ``owner``."""
        name = owner_name(owner)
        now = self._db.now_us()
        with self._db.transaction() as conn:
            rows = conn.execute(
                "UPDATE actions SET owner = ?, updated = ? WHERE status = 'claimed'"
                " AND job IS NOT NULL AND owner != ?"
                " AND substr(owner, 1, ?) = ? RETURNING key, action_index, job",
                (owner, now, owner, len(name) + 1, f"{name}#"),
            ).fetchall()
        return [(str(row[0]), int(row[1]), bytes(row[2])) for row in rows]

    def read(self, *, automation_id: UUID | None = None, limit: int = 100) -> list[ActionRecord]:
        """Up to ``limit`` action records, newest first, optionally of one automation."""
        where: str = ""
        params: list[str | int] = [max(limit, 0)]
        if automation_id is not None:
            where, params = " WHERE automation_id = ?", [str(automation_id), max(limit, 0)]
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT key, firing_id, automation_id, action_index, status, detail, created,"
                f" updated FROM actions{where} ORDER BY created DESC, rowid DESC LIMIT ?",
                params,
            ).fetchall()
        return [_record(row) for row in rows]


def _record(row: Sequence[Any]) -> ActionRecord:
    return ActionRecord(
        key=row[0],
        firing_id=row[1],
        automation_id=row[2],
        action_index=row[3],
        status=row[4],
        detail=row[5],
        created=from_us(row[6]),
        updated=from_us(row[7]),
    )
