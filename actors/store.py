"""The daemon's SQLite store: automations, event log, checkpoints, action log, webhooks.

One WAL-mode database file in the data dir, shared by the daemon's threads
(one lock serialises them) and opened separately by executor processes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from uuid import UUID

from pydantic import ValidationError

from marmot.actors.actionlog import ActionJournal, add_action_owner_and_job
from marmot.actors.eventlog import SCHEMA as EVENTLOG_SCHEMA
from marmot.actors.eventlog import EventLog
from marmot.actors.incidents import IncidentLog, create_incidents_table
from marmot.actors.webhooks import WebhookRegistry, create_webhooks_table
from marmot.engine.errors import Conflict, NotFound, Unsupported, ValidationFailed
from marmot.engine.models.automations import Automation
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.timestamps import from_us, to_us

Clock = Callable[[], datetime]

# How long a write waits for the database's write lock before failing. The
# daemon and every automation actor write (appends, checkpoints): with 100
# actors checkpointing at once behind a busy append loop, 5 s was too short.
BUSY_TIMEOUT_S = 30.0


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
        *EVENTLOG_SCHEMA,
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


# MIGRATIONS[n] upgrades a database at schema version n to n + 1. Append new
# entries; never edit a released one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_v1,
    _create_v2,
    create_incidents_table,
    add_action_owner_and_job,
    create_webhooks_table,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class StoredAutomation:
    """An automation with the store's bookkeeping (times are UTC)."""

    automation: Automation
    created: datetime
    updated: datetime
    version: int


log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Store(EventLog, IncidentLog, ActionJournal, WebhookRegistry):
    """The SQLite store; every method is thread-safe. Open with ``Store.open``."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Clock = _utc_now) -> None:
        super().__init__(conn, threading.Lock())
        self.path = path
        self._clock = clock
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()

    def start_checkpointer(self, interval_s: float = 1.0) -> None:
        """Move WAL checkpoints off the write path: a background thread with its
        own connection checkpoints (PASSIVE: never blocking writers) every
        ``interval_s``, and this connection stops checkpointing on commit.

        Measured (bench/daemon.py): an automatic checkpoint inside an append
        stalls it for 100-200 ms, which is what publish-to-firing p99 saw.
        """
        if self._checkpointer is not None:
            return
        with self._lock:
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        path = self.path
        stop = self._stop_checkpoints

        def run() -> None:
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
            try:
                while not stop.wait(interval_s):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # reported; the next daemon start restarts it
                log.error("WAL checkpoints stopped: %s", exc)
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=run, name="marmot-wal", daemon=True)
        self._checkpointer.start()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clock: Clock = _utc_now) -> Store:
        """Open (creating or upgrading) the store at ``path``; returns it.

        ``clock`` stamps ``created``/``updated`` times. Raises ``Unsupported``
        if the file was written by a newer schema version.
        """
        where = Path(path)
        where.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            where, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Measured on 100k appends in batches of 500: a 40 MB WAL between
            # checkpoints (default 4 MB) and a 32 MB page cache append ~1.6x faster.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            conn.execute("PRAGMA cache_size = -32768")
            store = cls(conn, where, clock)
            store._migrate()
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            self._checkpointer.join(10)
            self._checkpointer = None
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            current = 0 if row is None else int(row[0])
            if current > SCHEMA_VERSION:
                raise Unsupported(
                    f"{self.path} has schema version {current}; this Marmot reads up to "
                    f"{SCHEMA_VERSION}"
                )
            for migrate in MIGRATIONS[current:]:
                migrate(conn)
            if row is None:
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            else:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._lock:
            version: int = self._conn.execute("SELECT version FROM schema_version").fetchone()[0]
        return version

    def _now_us(self) -> int:
        return to_us(self._clock())

    # -- automations ------------------------------------------------------------------

    def create_automation(self, a: Automation) -> StoredAutomation:
        """Store a new automation at version 1; returns it as stored.

        Raises ``Conflict`` if an automation with its id or its name exists.
        """
        document = a.model_dump_json()
        now = self._now_us()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM automations WHERE id = ?", (str(a.id),)).fetchone():
                raise Conflict(f"an automation with id {a.id} already exists", details=str(a.id))
            _check_name_free(conn, a)
            conn.execute(
                "INSERT INTO automations VALUES (?, ?, ?, ?, ?, ?, 1)",
                (str(a.id), a.name, int(a.enabled), document, now, now),
            )
        return _stored(document, now, now, 1)

    def read_automation(self, id: UUID) -> StoredAutomation:
        """The automation with this id; raises ``NotFound`` if there is none."""
        return self._read_one("id = ?", str(id), f"no automation with id {id}")

    def read_automation_by_name(self, name: str) -> StoredAutomation:
        """The automation with this name; raises ``NotFound`` if there is none."""
        return self._read_one("name = ?", name, f"no automation named {name!r}")

    def _read_one(self, where: str, value: str, missing: str) -> StoredAutomation:
        with self._lock:
            row = self._conn.execute(
                f"SELECT document, created, updated, version FROM automations WHERE {where}",
                (value,),
            ).fetchone()
        if row is None:
            raise NotFound(missing, details=value)
        return _stored(*row)

    def list_automations(
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
        with self._lock:
            rows = self._conn.execute(
                "SELECT document, created, updated, version FROM automations"
                f"{where} ORDER BY name LIMIT ? OFFSET ?",
                params,
            ).fetchall()
        return [_stored(*row) for row in rows]

    def update_automation(self, a: Automation) -> StoredAutomation:
        """Replace the stored automation with ``a.id``, bumping its version; returns it.

        Raises ``NotFound`` if there is none and ``Conflict`` if another
        automation already has ``a.name``.
        """
        with self._transaction() as conn:
            return self._replace(conn, a)

    def set_enabled(self, id: UUID, enabled: bool) -> StoredAutomation:
        """Enable or disable an automation, bumping its version; returns it.

        Raises ``NotFound`` if there is none, and ``ValidationFailed`` if the
        automation may not be enabled (e.g. it would start a flow-run loop).
        """
        with self._transaction() as conn:
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
        now = self._now_us()
        created, version = int(row[0]), int(row[1]) + 1
        conn.execute(
            "UPDATE automations SET name = ?, enabled = ?, document = ?, updated = ?,"
            " version = ? WHERE id = ?",
            (a.name, int(a.enabled), document, now, version, str(a.id)),
        )
        return _stored(document, created, now, version)

    def delete_automation(self, id: UUID) -> None:
        """Delete an automation; raises ``NotFound`` if there is none."""
        with self._transaction() as conn:
            deleted = conn.execute("DELETE FROM automations WHERE id = ?", (str(id),)).rowcount
            if not deleted:
                raise NotFound(f"no automation with id {id}", details=str(id))

    # -- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, owner: str, seq: int, state: bytes) -> None:
        """Record ``owner``'s state as of sequence number ``seq``, replacing any earlier one."""
        self.save_checkpoints([(owner, seq, state)])

    def save_checkpoints(self, checkpoints: Sequence[tuple[str, int, bytes]]) -> None:
        """``save_checkpoint`` for many owners in one transaction (an actor hosting
        many automations takes the write lock once, not once per automation)."""
        if not checkpoints:
            return
        now = self._now_us()
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE"
                " SET seq = excluded.seq, state = excluded.state, updated = excluded.updated",
                [(owner, seq, state, now) for owner, seq, state in checkpoints],
            )

    def load_checkpoint(self, owner: str) -> tuple[int, bytes] | None:
        """``(seq, state)`` of ``owner``'s latest checkpoint, or None if it has none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT seq, state FROM checkpoints WHERE owner = ?", (owner,)
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def delete_checkpoint(self, owner: str) -> None:
        """Forget ``owner``'s checkpoint (nothing happens if it has none)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM checkpoints WHERE owner = ?", (owner,))

    def oldest_checkpoint_seq(self) -> int | None:
        """The lowest sequence number any checkpoint starts from (replay needs the log
        after it), or None when there are no checkpoints."""
        with self._lock:
            row = self._conn.execute("SELECT MIN(seq) FROM checkpoints").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- maintenance ------------------------------------------------------------------

    def wal_checkpoint(self) -> tuple[int, int]:
        """Copy the write-ahead log into the database file and truncate it; returns
        ``(WAL pages, pages copied)``. Writers wait while it runs."""
        with self._lock:
            busy, pages, copied = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
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

    # -- blocks -----------------------------------------------------------------------
    # Public data (secrets masked) in ``blocks``, the secrets in ``block_secrets``:
    # a normal read never touches the secrets table.

    def create_block(self, block: BlockDocument) -> BlockDocument:
        """Store a new block; returns it as stored, secrets masked.

        Raises ``Conflict`` if a block with its id, or of its type with its
        name, exists, and ``ValidationFailed`` if a secret holds a mask
        (``********``) instead of a value (a copied read result).
        """
        masked = block.data.obfuscated_fields()
        if masked:
            raise ValidationFailed(
                f"{block.describe()}: {', '.join(masked)} must hold the real secret, not a mask",
                details=masked,
            )
        now = self._now_us()
        public = json.dumps(block.data.public_fields(), sort_keys=True)
        secrets = json.dumps(block.data.secret_fields(), sort_keys=True)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM blocks WHERE id = ?", (str(block.id),)).fetchone():
                raise Conflict(f"a block with id {block.id} already exists", details=str(block.id))
            clash = conn.execute(
                "SELECT id FROM blocks WHERE type = ? AND name = ?",
                (block.block_type_slug, block.name),
            ).fetchone()
            if clash is not None:
                raise Conflict(f"a {block.describe()} block already exists", details=clash[0])
            conn.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                (str(block.id), block.name, block.block_type_slug, public, now, now),
            )
            conn.execute("INSERT INTO block_secrets VALUES (?, ?)", (str(block.id), secrets))
        return _block(str(block.id), block.name, block.block_type_slug, public, now, now)

    def read_block(self, id: UUID, *, include_secrets: bool = False) -> BlockDocument:
        """The block with this id, secrets masked unless ``include_secrets``;
        raises ``NotFound`` if there is none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, name, type, data, created, updated FROM blocks WHERE id = ?",
                (str(id),),
            ).fetchone()
            secrets = None
            if row is not None and include_secrets:
                secrets = self._conn.execute(
                    "SELECT data FROM block_secrets WHERE block_id = ?", (str(id),)
                ).fetchone()
        if row is None:
            raise NotFound(f"no block with id {id}", details=str(id))
        return _block(*row, secrets=None if secrets is None else str(secrets[0]))

    def read_block_by_name(self, type: str, name: str) -> BlockDocument:
        """The block of this type with this name, secrets masked; raises
        ``NotFound`` if there is none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, name, type, data, created, updated FROM blocks"
                " WHERE type = ? AND name = ?",
                (type, name),
            ).fetchone()
        if row is None:
            raise NotFound(f"no {type} block named {name!r}", details=f"{type}/{name}")
        return _block(*row)

    def list_blocks(self, type: str | None = None) -> list[BlockDocument]:
        """Every block (of one type, if given), secrets masked, sorted by type and name."""
        where, params = ("", ()) if type is None else (" WHERE type = ?", (type,))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, name, type, data, created, updated FROM blocks{where}"
                " ORDER BY type, name",
                params,
            ).fetchall()
        return [_block(*row) for row in rows]

    def delete_block(self, id: UUID) -> None:
        """Delete a block and its secrets; raises ``NotFound`` if there is none."""
        with self._transaction() as conn:
            # The secrets go with the block (ON DELETE CASCADE).
            if not conn.execute("DELETE FROM blocks WHERE id = ?", (str(id),)).rowcount:
                raise NotFound(f"no block with id {id}", details=str(id))

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any earlier value."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
                (key, value, value),
            )


def _check_name_free(conn: sqlite3.Connection, a: Automation) -> None:
    clash = conn.execute(
        "SELECT id FROM automations WHERE name = ? AND id != ?", (a.name, str(a.id))
    ).fetchone()
    if clash is not None:
        raise Conflict(f"an automation named {a.name!r} already exists", details=a.name)


def _stored(document: str, created: int, updated: int, version: int) -> StoredAutomation:
    return StoredAutomation(
        Automation.model_validate_json(document), from_us(created), from_us(updated), version
    )


def _block(
    id: str,
    name: str,
    type: str,
    data: str,
    created: int,
    updated: int,
    *,
    secrets: str | None = None,
) -> BlockDocument:
    fields = json.loads(data)
    if secrets is not None:
        fields.update(json.loads(secrets))
    return BlockDocument.model_validate(
        {
            "id": id,
            "name": name,
            "block_type_slug": type,
            "data": fields,
            "created": from_us(created),
            "updated": from_us(updated),
        }
    )
