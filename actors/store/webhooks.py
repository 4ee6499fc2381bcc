"""Incoming webhooks kept in the store: each with a unique name and a secret URL slug.

The slug is Marmot's: a random URL-safe token, assigned at creation and replaced
when the webhook is rotated (the old URL stops working at once). The HTTP
server resolves slugs from a map held in memory, rebuilt after any change made
through the store, so a request costs no query.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from marmot.actors.store.database import Database
from marmot.engine.errors import Conflict, NotFound
from marmot.engine.models.webhooks import WebhookIdentity, WebhookSpec
from marmot.engine.timestamps import from_us

__all__ = ["SLUG_BYTES", "StoredWebhook", "Webhooks", "new_slug"]

SLUG_BYTES = 16
"""Random bytes in a slug: 22 URL-safe characters, as long as Prefect Cloud's."""


def new_slug() -> str:
    """A fresh, unguessable URL slug."""
    return secrets.token_urlsafe(SLUG_BYTES)


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """A webhook as stored (times are UTC)."""

    id: UUID
    name: str
    description: str
    is_enabled: bool
    template: str
    slug: str
    created: datetime
    updated: datetime

    @property
    def identity(self) -> WebhookIdentity:
        """The webhook as the events it makes name it."""
        return WebhookIdentity(self.id, self.name)

    def spec(self) -> WebhookSpec:
        """The user's part of it (name, description, enabled, template)."""
        return WebhookSpec.model_construct(
            name=self.name,
            description=self.description,
            enabled=self.is_enabled,
            template=self.template,
        )

    def to_json(self, hooks_url: str | None) -> dict[str, Any]:
        """JSON-safe fields, for the RPC; ``url`` is ``hooks_url`` + slug (None without one)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "description": self.description,
            "enabled": self.is_enabled,
            "template": self.template,
            "slug": self.slug,
            "url": None if hooks_url is None else f"{hooks_url}{self.slug}",
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
        }


_COLUMNS = "id, name, description, enabled, template, slug, created, updated"


def _webhook(row: tuple[Any, ...]) -> StoredWebhook:
    return StoredWebhook(
        id=UUID(row[0]),
        name=row[1],
        description=row[2],
        is_enabled=bool(row[3]),
        template=row[4],
        slug=row[5],
        created=from_us(row[6]),
        updated=from_us(row[7]),
    )


class Webhooks:
    """Create, read, change, rotate and delete webhooks; resolve slugs."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # slug -> webhook, every webhook; None until built, and again after each change.
        self._webhooks_by_slug: dict[str, StoredWebhook] | None = None

    def _changed(self) -> None:
        # Called with the lock held, inside the change's transaction: a map built
        # by a reader before the change can never be stored after it.
        self._webhooks_by_slug = None

    def create(self, spec: WebhookSpec) -> StoredWebhook:
        """Store a new webhook with a new id and slug; returns it.

        Raises ``Conflict`` if a webhook with its name exists.
        """
        now = self._db.now_us()
        webhook_id = str(uuid4())
        with self._db.transaction() as conn:
            _check_name_free(conn, spec.name, webhook_id)
            conn.execute(
                f"INSERT INTO webhooks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    webhook_id,
                    spec.name,
                    spec.description,
                    int(spec.enabled),
                    spec.template,
                    _free_slug(conn),
                    now,
                    now,
                ),
            )
            self._changed()
            return _read(conn, "id = ?", webhook_id)

    def read(self, id: UUID) -> StoredWebhook:
        """The webhook with this id; raises ``NotFound`` if there is none."""
        with self._db.lock:
            found = _find(self._db.conn, "id = ?", str(id))
        if found is None:
            raise NotFound(f"no webhook with id {id}", details=str(id))
        return found

    def read_by_name(self, name: str) -> StoredWebhook:
        """The webhook with this name; raises ``NotFound`` if there is none."""
        with self._db.lock:
            found = _find(self._db.conn, "name = ?", name)
        if found is None:
            raise NotFound(f"no webhook named {name!r}", details=name)
        return found

    def list(
        self, *, name_prefix: str | None = None, enabled: bool | None = None
    ) -> list[StoredWebhook]:
        """Webhooks matching every filter, sorted by name."""
        clauses: list[str] = []
        params: list[str | int] = []
        if name_prefix:
            clauses.append("substr(name, 1, length(?)) = ?")
            params += [name_prefix, name_prefix]
        if enabled is not None:
            clauses.append("enabled = ?")
            params.append(int(enabled))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._db.lock:
            rows = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM webhooks{where} ORDER BY name", params
            ).fetchall()
        return [_webhook(row) for row in rows]

    def update(self, id: UUID, spec: WebhookSpec) -> StoredWebhook:
        """Replace a webhook's name, description, enabled flag and template (its slug
        stays); returns it. Raises ``NotFound`` if there is none and ``Conflict`` if
        another webhook has the name."""
        with self._db.transaction() as conn:
            _read(conn, "id = ?", str(id))
            _check_name_free(conn, spec.name, str(id))
            conn.execute(
                "UPDATE webhooks SET name = ?, description = ?, enabled = ?, template = ?,"
                " updated = ? WHERE id = ?",
                (
                    spec.name,
                    spec.description,
                    int(spec.enabled),
                    spec.template,
                    self._db.now_us(),
                    str(id),
                ),
            )
            self._changed()
            return _read(conn, "id = ?", str(id))

    def rotate(self, id: UUID) -> StoredWebhook:
        """Give a webhook a new slug (its old URL stops working); returns it.
        Raises ``NotFound`` if there is none."""
        with self._db.transaction() as conn:
            _read(conn, "id = ?", str(id))
            conn.execute(
                "UPDATE webhooks SET slug = ?, updated = ? WHERE id = ?",
                (_free_slug(conn), self._db.now_us(), str(id)),
            )
            self._changed()
            return _read(conn, "id = ?", str(id))

    def delete(self, id: UUID) -> None:
        """Delete a webhook; raises ``NotFound`` if there is none."""
        with self._db.transaction() as conn:
            if not conn.execute("DELETE FROM webhooks WHERE id = ?", (str(id),)).rowcount:
                raise NotFound(f"no webhook with id {id}", details=str(id))
            self._changed()

    def for_slug(self, slug: str) -> StoredWebhook | None:
        """The webhook whose URL ends in ``slug`` (enabled or not), or None; from memory
        (one query rebuilds the map after a change)."""
        known = self._webhooks_by_slug
        if known is None:
            with self._db.lock:
                known = self._webhooks_by_slug
                if known is None:
                    rows = self._db.conn.execute(f"SELECT {_COLUMNS} FROM webhooks").fetchall()
                    known = {row[5]: _webhook(row) for row in rows}
                    self._webhooks_by_slug = known
        return known.get(slug)


def _find(conn: sqlite3.Connection, where: str, value: str) -> StoredWebhook | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM webhooks WHERE {where}", (value,)).fetchone()
    return None if row is None else _webhook(row)


def _read(conn: sqlite3.Connection, where: str, value: str) -> StoredWebhook:
    found = _find(conn, where, value)
    if found is None:
        raise NotFound(f"no webhook with id {value}", details=value)
    return found


def _check_name_free(conn: sqlite3.Connection, name: str, webhook_id: str) -> None:
    clash = conn.execute(
        "SELECT id FROM webhooks WHERE name = ? AND id != ?", (name, webhook_id)
    ).fetchone()
    if clash is not None:
        raise Conflict(f"a webhook named {name!r} already exists", details=name)


def _free_slug(conn: sqlite3.Connection) -> str:
    # 128 random bits never repeat in practice; the check keeps UNIQUE from failing anyway.
    while True:
        slug = new_slug()
        if conn.execute("SELECT 1 FROM webhooks WHERE slug = ?", (slug,)).fetchone() is None:
            return slug
