"""Followers the router holds back until their leader comes (SEMANTICS §6), kept
durable: a follower held when the daemon stops is held again when it starts, and
then evaluated when its leader comes or it is lost, exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from marmot.actors.store.database import Database

__all__ = ["HeldFollowers"]


class HeldFollowers:
    """``(event id, sequence number, received µs)`` of each held follower."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def hold(self, rows: Sequence[tuple[UUID, int, int]]) -> None:
        """Record followers held back (one transaction for them all)."""
        if not rows:
            return
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO held_followers VALUES (?, ?, ?)",
                [(event_id.bytes, seq, received) for event_id, seq, received in rows],
            )

    def release(self, event_ids: Sequence[UUID]) -> None:
        """Forget followers that were routed (released with their leader, or lost)."""
        if not event_ids:
            return
        with self._db.transaction() as conn:
            conn.executemany(
                "DELETE FROM held_followers WHERE event_id = ?", [(i.bytes,) for i in event_ids]
            )

    def all(self) -> list[tuple[UUID, int, int]]:
        """Every held follower, oldest sequence number first."""
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT event_id, seq, received FROM held_followers ORDER BY seq"
            ).fetchall()
        return [(UUID(bytes=bytes(r[0])), int(r[1]), int(r[2])) for r in rows]
