"""Automations kept in the store, with their versions and times."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from pydantic import ValidationError

from marmot.actors.store.database import Database
from marmot.engine.errors import Conflict, NotFound, ValidationFailed
from marmot.engine.models.automations import Automation
from marmot.engine.timestamps import from_us

__all__ = ["Automations", "StoredAutomation"]


@dataclass(frozen=True, slots=True)
class StoredAutomation:
    """An automation with the store's bookkeeping (times are UTC)."""

    automation: Automation
    created: datetime
    updated: datetime
    version: int


@dataclass(frozen=True, slots=True)
class _Parsed:
    document: str
    version: int
    updated: int
    automation: Automation


# Documents read per query when a listing finds some changed (SQLite's limit on
# parameters is far above it).
_READ_PART = 500


class Automations:
    """Create, read, list, change and delete automations; names are unique."""

    def __init__(self, db: Database) -> None:
        # Parsed documents by id, so listing a fleet neither reads nor validates
        # every document again. Documents only change through this class, each
        # change with a new version and time, which tell a parse still current.
        self._parsed: dict[str, _Parsed] = {}
        self._db = db

    def create(self, a: Automation) -> StoredAutomation:
        """Store a new automation at version 1; returns it as stored.

        Raises ``Conflict`` if an automation with its id or its name exists.
        """
        document = a.model_dump_json()
        now = self._db.now_us()
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM automations WHERE id = ?", (str(a.id),)).fetchone():
                raise Conflict(f"an automation with id {a.id} already exists", details=str(a.id))
            _check_name_free(conn, a)
            conn.execute(
                "INSERT INTO automations VALUES (?, ?, ?, ?, ?, ?, 1)",
                (str(a.id), a.name, int(a.enabled), document, now, now),
            )
        return self._stored(document, now, now, 1, str(a.id))

    def create_many(self, automations: Sequence[Automation]) -> list[StoredAutomation]:
        """Store new automations in one transaction, all or none; raises ``Conflict``
        (nothing stored) if an id or a name is taken, or given twice."""
        stored: list[StoredAutomation] = []
        now = self._db.now_us()
        names: set[str] = set()
        ids: set[str] = set()
        with self._db.transaction() as conn:
            for a in automations:
                if (
                    str(a.id) in ids
                    or conn.execute(
                        "SELECT 1 FROM automations WHERE id = ?", (str(a.id),)
                    ).fetchone()
                ):
                    raise Conflict(
                        f"an automation with id {a.id} already exists", details=str(a.id)
                    )
                if a.name in names:
                    raise Conflict(f"the automation name {a.name!r} is given twice", details=a.name)
                _check_name_free(conn, a)
                ids.add(str(a.id))
                names.add(a.name)
                document = a.model_dump_json()
                conn.execute(
                    "INSERT INTO automations VALUES (?, ?, ?, ?, ?, ?, 1)",
                    (str(a.id), a.name, int(a.enabled), document, now, now),
                )
                stored.append(self._stored(document, now, now, 1, str(a.id)))
        return stored

    def read(self, id: UUID) -> StoredAutomation:
        """The automation with this id; raises ``NotFound`` if there is none."""
        return self._read_one("id = ?", str(id), f"no automation with id {id}")

    def read_by_name(self, name: str) -> StoredAutomation:
        """The automation with this name; raises ``NotFound`` if there is none."""
        return self._read_one("name = ?", name, f"no automation named {name!r}")

    def _read_one(self, where: str, value: str, missing: str) -> StoredAutomation:
        with self._db.lock:
            row = self._db.conn.execute(
                f"SELECT document, created, updated, version, id FROM automations WHERE {where}",
                (value,),
            ).fetchone()
        if row is None:
            raise NotFound(missing, details=value)
        return self._stored(*row)

    def list(
        self,
        *,
        name_prefix: str | None = None,
        enabled: bool | None = None,
        tags: Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[StoredAutomation]:
        """Automations matching every filter, sorted by name.

        ``tags`` keeps automations that carry all of the given tags.
        """
        clauses: list[str] = []
        params: list[str | int] = []
        if name_prefix:
            clauses.append("substr(name, 1, length(?)) = ?")
            params += [name_prefix, name_prefix]
        if enabled is not None:
            clauses.append("enabled = ?")
            params.append(int(enabled))
        for tag in dict.fromkeys(tags):
            clauses.append("EXISTS (SELECT 1 FROM json_each(document, '$.tags') WHERE value = ?)")
            params.append(tag)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        params += [-1 if limit is None else max(limit, 0), max(offset, 0)]
        listed: list[StoredAutomation] = []
        with self._db.lock:
            conn = self._db.conn
            rows = conn.execute(
                "SELECT id, created, updated, version FROM automations"
                f"{where} ORDER BY name LIMIT ? OFFSET ?",
                params,
            ).fetchall()
            # Only the documents that changed since they were parsed here are read.
            stale = [row[0] for row in rows if not self._current(*row)]
            documents: dict[str, str] = {}
            for start in range(0, len(stale), _READ_PART):
                part = stale[start : start + _READ_PART]
                documents.update(
                    conn.execute(
                        "SELECT id, document FROM automations"
                        f" WHERE id IN ({', '.join('?' * len(part))})",
                        part,
                    ).fetchall()
                )
        for automation_id, created, updated, version in rows:
            document = documents.get(automation_id)
            if document is not None:
                listed.append(self._stored(document, created, updated, version, automation_id))
            else:
                parsed = self._parsed.get(automation_id)
                if parsed is None:
                    continue  # deleted by another process between the two reads
                listed.append(
                    StoredAutomation(parsed.automation, from_us(created), from_us(updated), version)
                )
        return listed

    def _current(self, automation_id: str, created: int, updated: int, version: int) -> bool:
        parsed = self._parsed.get(automation_id)
        return parsed is not None and parsed.version == version and parsed.updated == updated

    def update(self, a: Automation) -> StoredAutomation:
        """Replace the stored automation with ``a.id``, bumping its version; returns it.

        Raises ``NotFound`` if there is none and ``Conflict`` if another
        automation already has ``a.name``.
        """
        with self._db.transaction() as conn:
            return self._replace(conn, a)

    def set_enabled(self, id: UUID, enabled: bool) -> StoredAutomation:
        """Enable or disable an automation, bumping its version; returns it.

        Raises ``NotFound`` if there is none, and ``ValidationFailed`` if the
        automation may not be enabled (e.g. it would start a flow-run loop).
        """
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT document FROM automations WHERE id = ?", (str(id),)
            ).fetchone()
            if row is None:
                raise NotFound(f"no automation with id {id}", details=str(id))
            # Re-validate: enabling runs checks a disabled automation skips.
            try:
                changed = Automation.model_validate({**json.loads(row[0]), "enabled": enabled})
            except ValidationError as exc:
                raise ValidationFailed(
                    f"automation {id} cannot be {'enabled' if enabled else 'disabled'}: "
                    f"{exc.errors(include_url=False)[0]['msg']}",
                    details=[
                        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
                        for e in exc.errors(include_url=False)
                    ],
                ) from exc
            return self._replace(conn, changed)

    def _replace(self, conn: sqlite3.Connection, a: Automation) -> StoredAutomation:
        row = conn.execute(
            "SELECT created, version FROM automations WHERE id = ?", (str(a.id),)
        ).fetchone()
        if row is None:
            raise NotFound(f"no automation with id {a.id}", details=str(a.id))
        _check_name_free(conn, a)
        document = a.model_dump_json()
        now = self._db.now_us()
        created, version = int(row[0]), int(row[1]) + 1
        conn.execute(
            "UPDATE automations SET name = ?, enabled = ?, document = ?, updated = ?,"
            " version = ? WHERE id = ?",
            (a.name, int(a.enabled), document, now, version, str(a.id)),
        )
        return self._stored(document, created, now, version, str(a.id))

    def delete(self, id: UUID) -> None:
        """Delete an automation; raises ``NotFound`` if there is none."""
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM automations WHERE id = ?", (str(id),)).rowcount
            if not deleted:
                raise NotFound(f"no automation with id {id}", details=str(id))
        self._parsed.pop(str(id), None)

    def _stored(
        self, document: str, created: int, updated: int, version: int, automation_id: str
    ) -> StoredAutomation:
        cached = self._parsed.get(automation_id)
        if cached is not None and cached.document == document:
            automation = cached.automation
        else:
            automation = Automation.model_validate_json(document)
        self._parsed[automation_id] = _Parsed(document, version, updated, automation)
        return StoredAutomation(automation, from_us(created), from_us(updated), version)


def _check_name_free(conn: sqlite3.Connection, a: Automation) -> None:
    clash = conn.execute(
        "SELECT id FROM automations WHERE name = ? AND id != ?", (a.name, str(a.id))
    ).fetchone()
    if clash is not None:
        raise Conflict(f"an automation named {a.name!r} already exists", details=a.name)
