"""Whether the daemon can keep what it acknowledges: its store watched on a cadence.

``StorageWatch`` looks at the data folder every ``interval_s``. A folder deleted
or replaced (``StorageLost``; every write checks it too) is handed once to
``on_lost``, which stops the daemon serving. While writes are refused (a full
disk) it writes a probe now and then, so the fault ends by itself once space is
back, also when nothing else writes. ``fault`` is what health reports; the
store's refusals are exported as ``marmot_storage_failures{reason}`` and its
state as ``marmot_storage_ok``. ``HeldWrites`` makes a refused write again, in
order, until the store takes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from marmot.actors.store.database import Database
from marmot.engine.errors import MarmotError, StorageFailed, StorageLost

__all__ = ["HeldWrites", "StorageWatch"]

log = logging.getLogger(__name__)

# How often the folder is looked at (two stat calls) and, while writes are
# refused, a probe is written.
CHECK_INTERVAL_S = 1.0

LostHandler = Callable[[StorageLost], Awaitable[None]]
T = TypeVar("T")


class _Failures(Collector):
    """``marmot_storage_failures``: the database's refusals, read when scraped."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "marmot_storage_failures",
            "Writes and WAL checkpoints the data folder refused, by reason (storage_full, "
            "storage_failed, storage_lost, wal_checkpoint)",
            labels=["reason"],
        )
        for reason, count in sorted(self._db.failures.items()):
            family.add_metric([reason], count)
        yield family


class StorageWatch:
    """Checks the store's folder on a cadence; reports a lost folder once."""

    def __init__(
        self,
        db: Database,
        on_lost: LostHandler,
        *,
        registry: CollectorRegistry | None = None,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._db = db
        self._on_lost = on_lost
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        if registry is not None:
            registry.register(_Failures(db))
            ok = Gauge(
                "marmot_storage_ok",
                "1 while the data folder takes writes, 0 while it refuses them (a full disk, "
                "a read-only or deleted folder): see /healthz for why",
                registry=registry,
            )
            ok.set_function(lambda: float(db.fault is None))

    @property
    def fault(self) -> StorageFailed | None:
        """Why the store cannot keep what it is given now, or None."""
        return self._db.fault

    def start(self) -> None:
        """Start checking (a task on the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop checking."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if not await self.check():
                return

    async def check(self) -> bool:
        """Check the folder now (and probe a refused store); False once it is lost."""
        db = self._db
        try:
            db.check_identity()
        except StorageLost as exc:
            await self._on_lost(exc)
            return False
        if db.fault is not None:
            try:
                await asyncio.to_thread(db.check_writable)
            except StorageLost as exc:
                await self._on_lost(exc)
                return False
            except StorageFailed:
                pass  # refused again: counted by the database, reported by ``fault``
        return True


class HeldWrites:
    """Writes the store refuses for a while (a full disk) held and made again, in order.

    ``await held(write)`` awaits ``write()``; a retryable refusal
    (``StorageFull``) is tried again after a back-off doubling up to
    ``max_delay_s``, for as long as it lasts, and writes that come meanwhile
    wait their turn behind it. Other errors propagate.
    """

    def __init__(self, max_delay_s: float = 1.0) -> None:
        self.max_delay_s = max_delay_s
        self._held = asyncio.Lock()

    @property
    def is_holding(self) -> bool:
        """Whether a refused write is being made again."""
        return self._held.locked()

    async def __call__(self, write: Callable[[], Awaitable[T]]) -> T:
        if not self._held.locked():
            try:
                return await write()
            except MarmotError as exc:
                if not exc.is_retryable:
                    raise
                log.warning("holding writes until the store takes them: %s", exc)
        async with self._held:
            delay_s = 0.05
            while True:
                try:
                    return await write()
                except MarmotError as exc:
                    if not exc.is_retryable:
                        raise
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self.max_delay_s)
