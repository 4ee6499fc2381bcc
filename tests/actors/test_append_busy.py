"""The router's small appends never block its event loop on another writer's lock."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from marmot.actors.router import Router
from marmot.actors.store import Store
from marmot.actors.store.database import WriteBusy
from marmot.actors.wire import Outcome
from marmot.config import RouterConfig
from marmot.engine.clock import ManualClock
from marmot.engine.timestamps import from_us
from tests.engine.factories import event


def test_a_write_that_may_not_wait_fails_at_once_while_another_process_writes(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "marmot.db")
    other = sqlite3.connect(tmp_path / "marmot.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's transaction
        with pytest.raises(WriteBusy):
            store.events.append([event("job.a", 1)], wait=False)
        other.execute("COMMIT")
        assert store.events.append([event("job.a", 1)], wait=False) == [1]
        # The connection waits again as before once the lock was missed.
        assert store.events.last_seq() == 1
    finally:
        other.close()
        store.close()


def test_the_router_logs_in_a_thread_while_another_process_holds_the_lock(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async def on_outcome(outcome: Outcome) -> None:
            return None

        store = Store.open(tmp_path / "marmot.db")
        router = Router(store.events, RouterConfig(), on_outcome, ManualClock(from_us(10**7)))
        other = sqlite3.connect(tmp_path / "marmot.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            submitted = asyncio.create_task(router.submit([event("job.a", 1)]))
            ticks = 0
            while router.stats.append_waits == 0 and ticks < 10_000:
                await asyncio.sleep(0)  # the loop keeps turning meanwhile
                ticks += 1
            assert router.stats.append_waits == 1
            for _ in range(50):
                await asyncio.sleep(0)
            assert not submitted.done()  # waits for the other writer, in a thread
            other.execute("COMMIT")  # the event loop ran this: it was not blocked
            assert await asyncio.wait_for(submitted, 30) == [1]
            assert store.events.last_seq() == 1
        finally:
            other.close()
            await router.close()
            store.close()

    asyncio.run(scenario())
