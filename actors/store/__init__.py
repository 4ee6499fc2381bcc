"""The daemon's store: one SQLite ``Database`` and the repositories composed around it.

``Store.open(path)`` opens (creating or upgrading) the database and gives
``store.automations``, ``.blocks``, ``.checkpoints``, ``.events`` (the
durable event log), ``.actions`` (the action log), ``.incidents`` and
``.webhooks`` and ``.followers`` (followers held back); ``store.db`` holds
the connection, its lock, upkeep (WAL
checkpoints, backups) and the meta table. Every method is thread-safe.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from marmot.actors.store.actions import ActionLog, ActionRecord, owner_name
from marmot.actors.store.automations import Automations, StoredAutomation
from marmot.actors.store.blocks import Blocks
from marmot.actors.store.checkpoints import Checkpoints
from marmot.actors.store.database import Database
from marmot.actors.store.events import EventLog
from marmot.actors.store.followers import HeldFollowers
from marmot.actors.store.incidents import INCIDENT_STATUSES, Incident, Incidents
from marmot.actors.store.schema import SCHEMA_VERSION, migrate
from marmot.actors.store.webhooks import StoredWebhook, Webhooks
from marmot.engine.clock import Clock

__all__ = [
    "INCIDENT_STATUSES",
    "SCHEMA_VERSION",
    "ActionRecord",
    "Incident",
    "Store",
    "StoredAutomation",
    "StoredWebhook",
    "owner_name",
]


class Store:
    """The database and its repositories. Open with ``Store.open``; close when done."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.automations = Automations(db)
        self.blocks = Blocks(db)
        self.checkpoints = Checkpoints(db)
        self.events = EventLog(db)
        self.actions = ActionLog(db)
        self.incidents = Incidents(db)
        self.webhooks = Webhooks(db)
        self.followers = HeldFollowers(db)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clock: Clock | None = None) -> Store:
        """Open (creating or upgrading) the store at ``path``.

        ``clock`` stamps ``created``/``updated`` times (default: the wall clock).
        Raises ``Unsupported`` if the file was written by a newer schema version.
        """
        db = Database.open(path) if clock is None else Database.open(path, clock=clock)
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        return cls(db)

    @property
    def path(self) -> Path:
        """The database file."""
        return self.db.path

    def close(self) -> None:
        """Close the database; the store cannot be used afterwards."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
