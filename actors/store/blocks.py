"""Notification blocks kept in the store.

Public data (secrets masked) in ``blocks``, the secrets in ``block_secrets``:
a normal read never touches the secrets table.
"""

from __future__ import annotations

import json
from uuid import UUID

from marmot.actors.store.database import Database
from marmot.engine.errors import Conflict, NotFound, ValidationFailed
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.timestamps import from_us

__all__ = ["Blocks"]


class Blocks:
    """Create, read, list and delete blocks; a block's secrets are read only on request."""

    def __init__(self, db: Database) -> None:
        self._db = db

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
        raises ``NotFound`` if there is none."""
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT id, name, type, data, created, updated FROM blocks WHERE id = ?",
                (str(id),),
            ).fetchone()
            secrets = None
            if row is not None and include_secrets:
                secrets = self._db.conn.execute(
                    "SELECT data FROM block_secrets WHERE block_id = ?", (str(id),)
                ).fetchone()
        if row is None:
            raise NotFound(f"no block with id {id}", details=str(id))
        return _block(*row, secrets=None if secrets is None else str(secrets[0]))

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
