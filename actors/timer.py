"""The body of the timer actor: wakes automations exactly at their deadlines.

Deadlines are kept in a heap on the events clock (SEMANTICS §6); the actor
sleeps until the earliest one is due on the wall clock (``deadline - offset``)
and yields the automation ids that are due on a stream the daemon reads.
No polling: the sleep is re-armed only when the schedule or offset changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.clock import Clock


class TimerHost:
    """A heap of deadlines per key; yields keys as they come due."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int, str]] = []
        self._current: dict[str, int] = {}
        # When each key's deadline was set (wall µs): a deadline already past then
        # is not late by the time it spent in the past before the timer heard of it.
        self._set_at: dict[str, int] = {}
        self._pushes = 0
        self._offset_us = 0
        self._changed = asyncio.Event()
        self._due: asyncio.Queue[list[tuple[str, int, int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def schedule(
        self, deadlines: dict[str, int | None], offset_us: int | None = None
    ) -> None:
        """Set (or clear, with None) the events-clock deadline of each key; and the
        events clock's offset, if given (it comes with every schedule, so a
        deadline never meets a stale offset)."""
        self._ensure_running()
        if offset_us is not None:
            self._offset_us = offset_us
        now = self._clock.now_us()
        for key, deadline in deadlines.items():
            if deadline is None:
                self._current.pop(key, None)
                self._set_at.pop(key, None)
                continue
            self._current[key] = deadline
            self._set_at[key] = now
            self._pushes += 1
            heapq.heappush(self._heap, (deadline, self._pushes, key))
        self._changed.set()

    async def set_offset(self, offset_us: int) -> None:
        """The events clock's offset from the wall clock (never positive)."""
        self._ensure_running()
        if offset_us != self._offset_us:
            self._offset_us = offset_us
            self._changed.set()

    async def pending(self) -> int:
        """How many keys have a deadline."""
        return len(self._current)

    async def stream(self) -> AsyncIterator[list[tuple[str, int, int]]]:
        """Yield lists of ``(key, as_of_us, lateness_us)`` as deadlines come due."""
        self._ensure_running()
        while True:
            yield await self._due.get()

    def _clean_top(self) -> None:
        heap = self._heap
        while heap and self._current.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)

    async def _run(self) -> None:
        while True:
            self._clean_top()
            self._changed.clear()
            if not self._heap:
                await self._changed.wait()
                continue
            now = self._clock.now_us()
            due_wall = max(self._heap[0][0], 0) - self._offset_us
            if due_wall > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), (due_wall - now) / 1e6)
                continue
            self._fire(now)

    def _fire(self, now: int) -> None:
        as_of = now + self._offset_us
        due: list[tuple[str, int, int]] = []
        heap = self._heap
        while heap and heap[0][0] <= as_of:
            deadline, _, key = heapq.heappop(heap)
            if self._current.get(key) != deadline:
                continue
            del self._current[key]
            set_at = self._set_at.pop(key, now)
            # Lateness measures the timer and the daemon, not the publisher's clock:
            # from when it was due on the wall clock, or set if that was later.
            due_wall = max(deadline, 0) - self._offset_us
            lateness = now - max(due_wall, set_at) if deadline >= 0 else 0
            due.append((key, as_of, lateness))
        if due:
            self._due.put_nowait(due)
