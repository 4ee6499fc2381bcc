"""Checkpoints: each automation's engine state as of a sequence number of the event log."""

from __future__ import annotations

from collections.abc import Sequence

from marmot.actors.store.database import Database

__all__ = ["Checkpoints"]


class Checkpoints:
    """Save, load and forget checkpoints, one per owner (an automation id)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, owner: str, seq: int, state: bytes) -> None:
        """Record ``owner``'s state as of sequence number ``seq``, replacing any earlier one."""
        self.save_many([(owner, seq, state)])

    def save_many(self, checkpoints: Sequence[tuple[str, int, bytes]]) -> None:
        """``save_checkpoint`` for many owners in one transaction (an actor hosting
        many automations takes the write lock once, not once per automation)."""
        if not checkpoints:
            return
        now = self._db.now_us()
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE"
                " SET seq = excluded.seq, state = excluded.state, updated = excluded.updated",
                [(owner, seq, state, now) for owner, seq, state in checkpoints],
            )

    def advance_many(self, owners: Sequence[str], seq: int) -> None:
        """Move the checkpoints of ``owners`` forward to ``seq``, their states kept
        (owners whose state has not changed since; one without a checkpoint, or
        with one already past ``seq``, is left alone)."""
        if not owners:
            return
        now = self._db.now_us()
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE checkpoints SET seq = ?, updated = ? WHERE owner = ? AND seq < ?",
                [(seq, now, owner, seq) for owner in owners],
            )

    def load(self, owner: str) -> tuple[int, bytes] | None:
        """``(seq, state)`` of ``owner``'s latest checkpoint, or None if it has none."""
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT seq, state FROM checkpoints WHERE owner = ?", (owner,)
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def delete(self, owner: str) -> None:
        """Forget ``owner``'s checkpoint (nothing happens if it has none)."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM checkpoints WHERE owner = ?", (owner,))

    def oldest_seq(self) -> int | None:
        """The lowest sequence number any checkpoint starts from (replay needs the log
        after it), or None when there are no checkpoints."""
        with self._db.lock:
            row = self._db.conn.execute("SELECT MIN(seq) FROM checkpoints").fetchone()
        return None if row is None or row[0] is None else int(row[0])
