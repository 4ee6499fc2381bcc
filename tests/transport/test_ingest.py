"""Ingest on real ZeroMQ sockets (127.0.0.1), without the daemon behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

import zmq

from marmot.actors.metrics import Metrics
from marmot.config import IngestConfig
from marmot.engine.models.events import Event, EventLimits
from marmot.transport.codec import events_frame
from marmot.transport.ingest import _DRAIN_FRAMES, Ingest


def _frame(name: str) -> bytes:
    event = Event.model_validate(
        {
            "id": str(uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": name,
            "resource": {"prefect.resource.id": "test.resource"},
        }
    )
    return events_frame([event])


async def _until(predicate: object, timeout_s: float = 20.0) -> None:
    async def wait() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout_s)


def test_frames_queued_before_and_after_an_idle_spell_all_arrive_in_order() -> None:
    """More frames than one drain takes are waiting when ingest starts, then the
    socket goes quiet, then one more frame comes: the descriptor's edge after
    the quiet spell still wakes ingest."""
    backlog = _DRAIN_FRAMES * 2 + 7

    async def main() -> tuple[list[str], int]:
        got: list[str] = []

        async def submit(events: Sequence[Event]) -> None:
            got.extend(e.event for e in events)

        ingest = Ingest(
            IngestConfig(pull_url="tcp://127.0.0.1:*"), EventLimits(), submit, Metrics()
        )
        ingest.start()
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(ingest.bound_endpoint)
        try:
            for k in range(backlog):
                push.send(_frame(f"test.backlog.{k}"))
            await asyncio.sleep(0.2)  # let them reach the PULL socket's queue
            task = asyncio.get_running_loop().create_task(ingest.run())
            await _until(lambda: len(got) == backlog)
            await asyncio.sleep(0.2)  # quiet: ingest waits on the descriptor
            push.send(b"\x93not an event")
            push.send(_frame("test.after-quiet"))
            await _until(lambda: len(got) == backlog + 1)
            await ingest.flush()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return got, ingest.dropped
        finally:
            push.close()
            ingest.close()

    got, dropped = asyncio.run(main())
    assert got == [f"test.backlog.{k}" for k in range(backlog)] + ["test.after-quiet"]
    assert dropped == 1
