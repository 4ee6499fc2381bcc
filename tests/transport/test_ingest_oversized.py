"""Oversized ingest frames on real ZeroMQ sockets (127.0.0.1): counted and logged,
not lost with the publisher's connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

import pytest
import zmq

from marmot.actors.metrics import Metrics
from marmot.config import IngestConfig
from marmot.engine.models.events import Event, EventLimits
from marmot.transport.codec import events_frame
from marmot.transport.ingest import Ingest, receive_limit

MIB = 1024 * 1024


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


def _publish(frames: Sequence[bytes], expected: int) -> tuple[list[str], Ingest, Metrics]:
    """Push ``frames`` from one PUSH socket to an ingest with the default frame limit
    (1 MiB); returns the events it took once ``expected`` have arrived."""
    metrics = Metrics()

    async def main() -> tuple[list[str], Ingest]:
        got: list[str] = []

        async def submit(events: Sequence[Event]) -> None:
            got.extend(e.event for e in events)

        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        ingest = Ingest(
            IngestConfig(pull_url="tcp://127.0.0.1:*"),
            EventLimits(),
            submit,
            metrics,
            context=context,
        )
        ingest.start()
        task = asyncio.get_running_loop().create_task(ingest.run())
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(ingest.bound_endpoint)
        try:
            for frame in frames:
                push.send(frame)
            deadline = asyncio.get_running_loop().time() + 60
            while len(got) < expected:
                assert asyncio.get_running_loop().time() < deadline, got
                await asyncio.sleep(0.02)
            await ingest.flush()
            return got, ingest
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            push.close(linger=0)
            ingest.close()
            context.destroy(linger=0)

    got, ingest = asyncio.run(main())
    return got, ingest, metrics


def _too_large(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "marmot_events_dropped_total", {"reason": "too_large"}
    )
    return value or 0.0


def test_a_frame_of_several_mib_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """3 MiB: over ZeroMQ's old cut-off (2 x max_frame_bytes), where libzmq dropped
    the connection and the frame vanished without a trace."""
    oversized = b"\x91" + b"\x00" * (3 * MIB)
    with caplog.at_level(logging.WARNING, logger="marmot.transport.ingest"):
        got, ingest, metrics = _publish(
            [_frame("test.before"), oversized, _frame("test.after")], expected=2
        )
    assert got == ["test.before", "test.after"]
    # The frame ahead of "test.after" on the same connection was seen and dropped.
    assert ingest.dropped == 1 and _too_large(metrics) == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "marmot.transport.ingest"]
    assert line == (
        f"dropped input: too_large: frame of {len(oversized)} bytes is over the limit of {MIB}"
    )


def test_oversized_frames_are_all_counted_and_logged_at_a_limited_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = [b"\x00" * (2 * MIB + k) for k in range(5)]
    with caplog.at_level(logging.WARNING, logger="marmot.transport.ingest"):
        got, _, metrics = _publish([*frames, _frame("test.after")], expected=1)
    assert got == ["test.after"]
    assert _too_large(metrics) == 5
    lines = [r for r in caplog.records if r.name == "marmot.transport.ingest"]
    assert len(lines) == 1


def test_zeromq_cuts_frames_off_only_far_past_the_frame_limit() -> None:
    assert receive_limit(MIB) == 64 * MIB
    assert receive_limit(100 * MIB) == 200 * MIB
