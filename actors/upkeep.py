"""Upkeep of the daemon's state: periodic checkpoints and event-log retention.

Checkpoints follow the log (``data.checkpoint_interval_s``), so a restart
replays only what came since; retention trims events older than
``data.event_retention_days`` that no checkpoint's replay still needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.metrics import Metrics
from marmot.actors.store import Store
from marmot.actors.tasks import TaskGroup
from marmot.config import DataConfig
from marmot.engine.clock import Clock

log = logging.getLogger(__name__)

__all__ = ["RETENTION_CHECK_S", "Upkeep"]

# How often the event log is looked at for events past their retention.
RETENTION_CHECK_S = 300.0


class Upkeep:
    """Runs the checkpoint and retention loops; ``maintain`` does both at once."""

    def __init__(
        self,
        store: Store,
        config: DataConfig,
        checkpoint: Callable[[], Awaitable[int]],
        metrics: Metrics,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``checkpoint`` checkpoints every automation actor and returns how many
        automations it saved."""
        self._store = store
        self._config = config
        self._checkpoint = checkpoint
        self._metrics = metrics
        self._clock = clock

    def start(self, tasks: TaskGroup) -> None:
        """Start the loops as tasks of ``tasks``."""
        interval_s = self._config.checkpoint_interval_s
        tasks.spawn(self._every(interval_s, self._checkpoint, "checkpoint"))
        tasks.spawn(self._every(RETENTION_CHECK_S, self.trim_events, "event log retention"))

    async def _every(
        self, interval_s: float, step: Callable[[], Awaitable[Any]], what: str
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await step()
            except Exception:
                log.exception("periodic %s failed", what)

    async def trim_events(self) -> int:
        """Delete events older than the retention that no checkpoint's replay needs."""
        store = self._store
        keep_after = store.checkpoints.oldest_seq()
        if keep_after is None:
            keep_after = store.events.last_seq()
        older_than = self._clock.now() - timedelta(days=self._config.event_retention_days)
        trimmed = await asyncio.to_thread(
            store.events.trim, keep_after_seq=keep_after, older_than=older_than
        )
        if trimmed:
            self._metrics.events_trimmed.inc(trimmed)
            log.info("event log trimmed", extra={"events": trimmed, "kept_after_seq": keep_after})
        return trimmed

    async def maintain(self) -> dict[str, Any]:
        """Checkpoint every actor, trim the event log past its retention, and fold the
        write-ahead log into the database (``marmot admin checkpoint``)."""
        saved = await self._checkpoint()
        trimmed = await self.trim_events()
        pages, copied = await asyncio.to_thread(self._store.db.wal_checkpoint)
        return {
            "automations_checkpointed": saved,
            "events_trimmed": trimmed,
            "wal_pages": pages,
            "wal_pages_copied": copied,
        }
