"""Notification blocks kept in the store.

Public data (secrets masked) in ``blocks``, the secrets in ``block_secrets``:
a normal read never touches the secrets table.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from marmot.actors.store.database import Database
from marmot.engine.errors import Conflict, NotFound, ValidationFailed
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.timestamps import from_us

__all__ = ["Blocks"]

# Blocks kept parsed with their secrets, at most.
_PARSED_MAX = 1024


class Blocks:
    """Create, read, list and delete blocks; a block's secrets are read only on request."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Blocks read with their secrets (an executor's, once per action), by id,
        # with the rows they were parsed from: a read that finds the same rows
        # returns the parse it made before (JSON and validation cost ~10 times
        # the lookup).
        self._parsed: dict[UUID, tuple[tuple[Any, ...], BlockDocument]] = {}

    def create(self, block: BlockDocument) -> BlockDocument:
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
        now = self._db.now_us()
        public = json.dumps(block.data.public_fields(), sort_keys=True)
        secrets = json.dumps(block.data.secret_fields(), sort_keys=True)
        with self._db.transaction() as conn:
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

    def read(self, id: UUID, *, include_secrets: bool = False) -> BlockDocument:
        """The block with this id, secrets masked unless ``include_secrets``;
        raises ``NotFound`` if there is none.

        With ``include_secrets``, the block and its secrets are read in one
        lookup, and a block read before with the same content is not parsed
        again.
        """
        if include_secrets:
            return self._read_with_secrets(id)
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT id, name, type, data, created, updated FROM blocks WHERE id = ?",
                (str(id),),
            ).fetchone()
        if row is None:
            raise NotFound(f"no block with id {id}", details=str(id))
        return _block(*row)

    def _read_with_secrets(self, id: UUID) -> BlockDocument:
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT b.id, b.name, b.type, b.data, b.created, b.updated, s.data"
                " FROM blocks AS b LEFT JOIN block_secrets AS s ON s.block_id = b.id"
                " WHERE b.id = ?",
                (str(id),),
            ).fetchone()
        if row is None:
            self._parsed.pop(id, None)
            raise NotFound(f"no block with id {id}", details=str(id))
        parsed = self._parsed.get(id)
        if parsed is not None and parsed[0] == row:
            return parsed[1]
        *public, secrets = row
        block = _block(*public, secrets=None if secrets is None else str(secrets))
        if len(self._parsed) >= _PARSED_MAX and id not in self._parsed:
            self._parsed.pop(next(iter(self._parsed)))  # the oldest read goes
        self._parsed[id] = (row, block)
        return block

    def read_by_name(self, type: str, name: str) -> BlockDocument:
        """The block of this type with this name, secrets masked; raises
        ``NotFound`` if there is none."""
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT id, name, type, data, created, updated FROM blocks"
                " WHERE type = ? AND name = ?",
                (type, name),
            ).fetchone()
        if row is None:
            raise NotFound(f"no {type} block named {name!r}", details=f"{type}/{name}")
        return _block(*row)

    def list(self, type: str | None = None) -> list[BlockDocument]:
        """Every block (of one type, if given), secrets masked, sorted by type and name."""
        where, params = ("", ()) if type is None else (" WHERE type = ?", (type,))
        with self._db.lock:
            rows = self._db.conn.execute(
                f"SELECT id, name, type, data, created, updated FROM blocks{where}"
                " ORDER BY type, name",
                params,
            ).fetchall()
        return [_block(*row) for row in rows]

    def delete(self, id: UUID) -> None:
        """Delete a block and its secrets; raises ``NotFound`` if there is none."""
        with self._db.transaction() as conn:
            # The secrets go with the block (ON DELETE CASCADE).
            if not conn.execute("DELETE FROM blocks WHERE id = ?", (str(id),)).rowcount:
                raise NotFound(f"no block with id {id}", details=str(id))


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
