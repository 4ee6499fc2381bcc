"""The store's schema: every table, created by numbered migrations.

``MIGRATIONS[n]`` upgrades a database at schema version n to n + 1. Append new
entries; never edit a released one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from marmot.actors.store.database import Database
from marmot.actors.store.events import SCHEMA as EVENTS_SCHEMA
from marmot.engine.errors import Unsupported

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]


def _create_v1(conn: sqlite3.Connection) -> None:
    statements = (
        """
        CREATE TABLE automations (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            enabled INTEGER NOT NULL,
            document TEXT NOT NULL,
            created INTEGER NOT NULL,
            updated INTEGER NOT NULL,
            version INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE checkpoints (
            owner TEXT PRIMARY KEY, seq INTEGER NOT NULL, state BLOB NOT NULL,
            updated INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE actions (
            key TEXT PRIMARY KEY, firing_id TEXT NOT NULL, automation_id TEXT NOT NULL,
            action_index INTEGER NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL,
            created INTEGER NOT NULL, updated INTEGER NOT NULL
        )
        """,
        "CREATE INDEX actions_automation_id ON actions (automation_id, created)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        *EVENTS_SCHEMA,
    )
    for statement in statements:
        conn.execute(statement)


def _create_v2(conn: sqlite3.Connection) -> None:
    # Notification blocks. ``data`` is the public JSON (secrets masked); the
    # secrets live in their own table, read only when a runner asks for them.
    statements = (
        """
        CREATE TABLE blocks (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            data TEXT NOT NULL,
            created INTEGER NOT NULL,
            updated INTEGER NOT NULL,
            UNIQUE (type, name)
        )
        """,
        """
        CREATE TABLE block_secrets (
            block_id TEXT PRIMARY KEY REFERENCES blocks (id) ON DELETE CASCADE,
            data TEXT NOT NULL
        )
        """,
    )
    for statement in statements:
        conn.execute(statement)


def _add_action_owner_and_job(conn: sqlite3.Connection) -> None:
    """Schema migration 4: who holds a claim, and the job to carry it out again."""
    conn.execute("ALTER TABLE actions ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE actions ADD COLUMN job BLOB")
    conn.execute("CREATE INDEX actions_claimed ON actions (owner) WHERE status = 'claimed'")


def _create_incidents_table(conn: sqlite3.Connection) -> None:
    """Schema migration 3: the incidents table."""
    conn.execute(
        """
        CREATE TABLE incidents (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            automation_id TEXT NOT NULL,
            firing_id TEXT NOT NULL,
            event_id TEXT,
            title TEXT NOT NULL,
            severity TEXT NOT NULL,
            summary TEXT NOT NULL,
            status TEXT NOT NULL,
            created INTEGER NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX incidents_created ON incidents (created)")


def _create_webhooks_table(conn: sqlite3.Connection) -> None:
    """Schema migration 5: the webhooks table."""
    conn.execute(
        """
        CREATE TABLE webhooks (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            template TEXT NOT NULL,
            slug TEXT NOT NULL UNIQUE,
            created INTEGER NOT NULL,
            updated INTEGER NOT NULL
        )
        """
    )


def _create_held_followers_table(conn: sqlite3.Connection) -> None:
    """Schema migration 6: followers held back, so a restart holds them again."""
    conn.execute(
        "CREATE TABLE held_followers ("
        " event_id BLOB PRIMARY KEY, seq INTEGER NOT NULL, received INTEGER NOT NULL)"
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_v1,
    _create_v2,
    _create_incidents_table,
    _add_action_owner_and_job,
    _create_webhooks_table,
    _create_held_followers_table,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: Database) -> None:
    """Bring the database's tables up to ``SCHEMA_VERSION``, in one transaction.

    Raises ``Unsupported`` if a newer Marmot wrote the file.
    """
    with db.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = 0 if row is None else int(row[0])
        if current > SCHEMA_VERSION:
            raise Unsupported(
                f"{db.path} has schema version {current}; this Marmot reads up to {SCHEMA_VERSION}"
            )
        for step in MIGRATIONS[current:]:
            step(conn)
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        else:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
