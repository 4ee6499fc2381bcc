"""The daemon's side of the timer actor: deadlines out, due automations back.

``TimerLink`` keeps the deadline ledger (only changes go to the timer, in
order, coalesced into one call per round trip), tells the timer the events
clock's offset while deadlines are pending, reads the timer's stream of due
deadlines and hands each batch to ``on_due``. A restarted timer is given the
offset and every pending deadline again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.deadlines import DeadlineLedger
from marmot.actors.lanes import Lane
from marmot.actors.metrics import Metrics
from marmot.actors.runtime import RayRuntime, Reply, TimerRef
from marmot.actors.tasks import TaskGroup
from marmot.engine.clock import Clock

log = logging.getLogger(__name__)

__all__ = ["DueHandler", "TimerLink"]

# While the timer holds deadlines, it is told the events clock's offset when it
# moved this much, at most this often (see TimerLink._push_offset).
OFFSET_SLACK_US = 2_000
OFFSET_PUSH_INTERVAL_S = 0.01

# Gets the automations due, the events-clock time they were due at and the
# processing time (µs).
DueHandler = Callable[[list[str], int, int], None]


class TimerLink:
    """Deadlines to the timer actor and due automations back to ``on_due``."""

    def __init__(
        self,
        runtime: RayRuntime,
        offset_us: Callable[[], int],
        on_due: DueHandler,
        metrics: Metrics,
        tasks: TaskGroup,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._runtime = runtime
        self._offset_us = offset_us
        self._on_due = on_due
        self._metrics = metrics
        self._tasks = tasks
        self._clock = clock
        self._ledger = DeadlineLedger()
        self.timer: TimerRef | None = None
        self._lane: Lane[tuple[str, int | None]] | None = None
        self._last_offset: int | None = None
        self._pusher: asyncio.Task[None] | None = None
        # Recent timer lateness (seconds), for `marmot status`.
        self.lateness: deque[float] = deque(maxlen=2048)

    def start(self) -> None:
        """Create the timer actor and start reading its stream."""
        self.timer = self._runtime.timer_actor()
        self._lane = Lane(
            self.timer,
            self._schedule,
            _ignore_result,
            self._failed,
            batch_max=10_000,
            max_inflight=1,
        )
        self._tasks.spawn(self._consume())

    async def stop(self) -> None:
        """Stop sending; the caller kills the actor (``timer``)."""
        if self._lane is not None:
            await self._lane.close()
            self._lane = None

    @property
    def timed(self) -> int:
        """How many automations have a deadline with the timer."""
        return self._ledger.timed

    def schedule_soon(self, deadlines: dict[str, int | None]) -> None:
        """Queue deadline changes (events-clock µs, or None to clear)."""
        if self._lane is not None:
            self._lane.put(self._ledger.changed(deadlines).items())

    def offset_changed(self) -> None:
        """Events arrived: push the new offset if deadlines wait on it."""
        pusher = self._pusher
        if self._ledger.timed and (pusher is None or pusher.done()) and self._offset_moved():
            self._pusher = self._tasks.spawn(self._push_offset())

    def _offset_moved(self) -> bool:
        last = self._last_offset
        return last is None or abs(self._offset_us() - last) >= OFFSET_SLACK_US

    async def _push_offset(self) -> None:
        # Live events move the offset by a few milliseconds with every one: the
        # timer hears of it at most every OFFSET_PUSH_INTERVAL_S, and only when
        # it moved by OFFSET_SLACK_US or more (a call per event would cost the
        # timer and the daemon more than the events). A stale offset makes a
        # timer wake early (the actor finds nothing due and says when) or late
        # by at most the slack plus the interval. With no deadline pending, the
        # timer is not told at all (the next schedule call carries the offset).
        while self.timer is not None and self._ledger.timed and self._offset_moved():
            offset = self._offset_us()
            self._last_offset = offset
            self.timer.set_offset(offset)
            await asyncio.sleep(OFFSET_PUSH_INTERVAL_S)

    def _schedule(self, timer: TimerRef, items: list[tuple[str, int | None]]) -> Reply[None]:
        # The offset goes with every schedule: the timer may not have heard it
        # for a long time (it is pushed only while deadlines are pending).
        offset = self._offset_us()
        self._last_offset = offset
        return timer.schedule(dict(items), offset)

    def _failed(self, lane: Lane[Any], batch: list[Any], exc: BaseException) -> bool:
        # A restarted timer is given every deadline again (_consume).
        self._metrics.actor_call_failures.labels("timer").inc()
        log.error("timer call failed: %s", exc)
        return False

    async def _consume(self) -> None:
        """Read the timer's stream of due deadlines, for as long as the daemon runs.

        A restarted timer (it died; Ray brought it back empty) breaks the
        stream: it is given the events clock's offset and every deadline
        again, then read anew.
        """
        restarted = False
        while self.timer is not None:
            try:
                if restarted:
                    if self._last_offset is not None:
                        self.timer.set_offset(self._last_offset)
                    if self._lane is not None:
                        self._lane.put(self._ledger.pending())
                async for due in self.timer.due():
                    self._due(due)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.actor_call_failures.labels("timer").inc()
                log.error("timer stream failed; giving a restarted timer its deadlines: %s", exc)
                restarted = True
                await asyncio.sleep(0.5)

    def _due(self, due: list[tuple[str, int, int]]) -> None:
        now = self._clock.now_us()
        as_of = now
        automation_ids: list[str] = []
        for automation_id, due_as_of, lateness in due:
            late_s = max(lateness, 0) / 1e6
            self._metrics.timer_lateness.observe(late_s)
            self.lateness.append(late_s)
            automation_ids.append(automation_id)
            as_of = due_as_of
        if automation_ids:
            self._on_due(automation_ids, as_of, now)

    def lateness_ms(self) -> dict[str, float] | None:
        """p50 / p99 / max of recent timer lateness, in milliseconds."""
        if not self.lateness:
            return None
        ordered = sorted(self.lateness)

        def pick(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        return {"p50": pick(0.50), "p99": pick(0.99), "max": ordered[-1] * 1000}


async def _ignore_result(lane: Any, batch: Any, result: Any) -> None:
    """For calls whose result carries nothing (the timer's ``schedule``)."""
