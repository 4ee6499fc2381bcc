"""Incidents declared by the ``declare-incident`` action, kept in the store.

An incident is recorded once per action (its idempotency key), so a firing
delivered twice declares one incident.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from marmot.actors.store.database import Database
from marmot.engine.errors import NotFound
from marmot.engine.timestamps import from_us
from marmot.engine.triggers.firing import FIRING_NAMESPACE

__all__ = ["INCIDENT_STATUSES", "Incident", "Incidents"]

INCIDENT_STATUSES = ("open", "resolved")


@dataclass(frozen=True, slots=True)
class Incident:
    """One declared incident."""

    id: UUID
    automation_id: UUID
    firing_id: UUID
    event_id: UUID | None
    title: str
    severity: str
    summary: str
    status: str
    created: datetime

    def to_json(self) -> dict[str, Any]:
        """JSON-safe fields, for the RPC."""
        return {
            "id": str(self.id),
            "automation_id": str(self.automation_id),
            "firing_id": str(self.firing_id),
            "event_id": None if self.event_id is None else str(self.event_id),
            "title": self.title,
            "severity": self.severity,
            "summary": self.summary,
            "status": self.status,
            "created": self.created.isoformat(),
        }


_COLUMNS = "id, automation_id, firing_id, event_id, title, severity, summary, status, created"


def _incident(row: tuple[Any, ...]) -> Incident:
    return Incident(
        id=UUID(row[0]),
        automation_id=UUID(row[1]),
        firing_id=UUID(row[2]),
        event_id=None if row[3] is None else UUID(row[3]),
        title=row[4],
        severity=row[5],
        summary=row[6],
        status=row[7],
        created=from_us(row[8]),
    )


class Incidents:
    """Record, read and resolve incidents."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(
        self,
        *,
        key: str,
        automation_id: UUID,
        firing_id: UUID,
        event_id: UUID | None,
        title: str,
        severity: str,
        summary: str,
    ) -> Incident:
        """Record an incident once per idempotency ``key``; returns it (the first one
        recorded under that key, if there was one)."""
        incident_id = uuid5(FIRING_NAMESPACE, f"incident|{key}")
        with self._db.transaction() as conn:
            conn.execute(
                f"INSERT OR IGNORE INTO incidents ({_COLUMNS}, key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
                (
                    str(incident_id),
                    str(automation_id),
                    str(firing_id),
                    None if event_id is None else str(event_id),
                    title,
                    severity,
                    summary,
                    self._db.now_us(),
                    key,
                ),
            )
            row = conn.execute(f"SELECT {_COLUMNS} FROM incidents WHERE key = ?", (key,)).fetchone()
        return _incident(row)

    def read(self, id: UUID) -> Incident:
        """One incident; raises ``NotFound`` if there is none."""
        with self._db.lock:
            row = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (str(id),)
            ).fetchone()
        if row is None:
            raise NotFound(f"no incident with id {id}", details=str(id))
        return _incident(row)

    def list(
        self, *, automation_id: UUID | None = None, status: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Up to ``limit`` incidents, newest first, optionally of one automation or status."""
        clauses, params = _filters(automation_id, status)
        with self._db.lock:
            rows = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM incidents{clauses}"
                " ORDER BY created DESC, rowid DESC LIMIT ?",
                [*params, max(limit, 0)],
            ).fetchall()
        return [_incident(row) for row in rows]

    def set_status(self, id: UUID, status: str) -> Incident:
        """Mark an incident ``open`` or ``resolved``."""
        if status not in INCIDENT_STATUSES:
            raise ValueError(f"status must be one of {', '.join(INCIDENT_STATUSES)}")
        with self._db.transaction() as conn:
            changed = conn.execute(
                "UPDATE incidents SET status = ? WHERE id = ?", (status, str(id))
            ).rowcount
        if not changed:
            raise NotFound(f"no incident with id {id}", details=str(id))
        return self.read(id)


def _filters(automation_id: UUID | None, status: str | None) -> tuple[str, list[str]]:
    tests: list[str] = []
    params: list[str] = []
    if automation_id is not None:
        tests.append("automation_id = ?")
        params.append(str(automation_id))
    if status is not None:
        tests.append("status = ?")
        params.append(status)
    return (" WHERE " + " AND ".join(tests) if tests else ""), params
