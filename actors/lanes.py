"""Batching lanes: one queue per actor, one Ray call per batch, bounded calls in flight.

While a call is in flight new items queue up, so batches grow with load and
a quiet lane sends at once (DESIGN.md: per-item Ray calls cannot be fast).
A lane may also be paced (``min_gap_s``): a call starts at least that long
after the one before, so a steady trickle of items goes in a few calls a
second rather than one call each, while an item after a quiet spell still
goes at once. Calls on one lane are issued in order, so an actor sees its
items in order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Issues the Ray call for a batch and returns its ObjectRef (or any awaitable).
Call = Callable[[Any, list[T]], Any]
# Gets the lane, the batch it sent and the call's result.
ResultHandler = Callable[["Lane[Any]", list[Any], Any], Awaitable[None]]
# Gets the lane, the batch whose call failed and the error; returns True to
# have the lane send the batch again (after a back-off, a bounded number of
# times in a row), False to drop it.
FailureHandler = Callable[["Lane[Any]", list[Any], BaseException], bool]

# Back-off before sending a failed batch again: doubling from REDO_DELAY_S up
# to REDO_MAX_DELAY_S; after MAX_REDOS failures in a row the batch is dropped.
REDO_DELAY_S = 0.1
REDO_MAX_DELAY_S = 2.0
MAX_REDOS = 12


def first_idle(lanes: Sequence[Lane[T]]) -> Lane[T]:
    """The first lane with no call in flight (what it has queued goes together in
    its next call), else the one with the fewest items queued."""
    for lane in lanes:
        if not lane.sending:
            return lane
    return min(lanes, key=lambda lane: lane.queued)


class Lane(Generic[T]):
    """Queue + sender task for one actor."""

    def __init__(
        self,
        handle: Any,
        call: Call[T],
        on_result: ResultHandler,
        on_failure: FailureHandler,
        *,
        batch_max: int,
        max_inflight: int,
        min_gap_s: float = 0.0,
    ) -> None:
        """``min_gap_s``: the least time from the start of one call to the start of
        the next (0: none). Items that come sooner wait out the rest of it with
        whatever queues meanwhile (unless a full batch is waiting); a lane that
        sent nothing for that long sends at once, no timer involved."""
        self.handle = handle
        self._call = call
        self._on_result = on_result
        self._on_failure = on_failure
        self.batch_max = batch_max
        self.max_inflight = max_inflight
        self.min_gap_s = min_gap_s
        self._last_call = float("-inf")  # loop time the last call started
        self._rest: asyncio.Task[None] | None = None  # waiting out min_gap_s
        self._items: deque[T] = deque()
        self._redo: deque[T] = deque()
        self._inflight: deque[asyncio.Task[None]] = deque()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.batches = 0
        self.sent = 0
        self.dropped = 0
        self._failures_in_a_row = 0
        self._backoff: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Items waiting to be sent."""
        return len(self._items) + len(self._redo)

    @property
    def busy(self) -> bool:
        """Whether items are queued or calls are in flight."""
        return bool(self._items or self._redo) or self.sending

    @property
    def sending(self) -> bool:
        """Whether a call is in flight or a failed batch waits to be sent again."""
        return any(not t.done() for t in self._inflight) or (
            self._backoff is not None and not self._backoff.done()
        )

    def waiting(self) -> Iterator[T]:
        """The items not sent yet, in the order they will be."""
        return itertools.chain(self._redo, self._items)

    def put(self, items: Iterable[T]) -> None:
        """Queue items for the actor."""
        self._items.extend(items)
        self._wake.set()

    def redo(self, items: Iterable[T]) -> None:
        """Send items again, before anything queued after them (batches complete in
        order, so items redone from successive batches keep their order)."""
        self._redo.extend(items)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            inflight = self._inflight
            while inflight and (len(inflight) >= self.max_inflight or inflight[0].done()):
                await asyncio.wait({inflight[0]})
                inflight.popleft()
            backoff = self._backoff
            if backoff is not None and not backoff.done():
                # A failed batch waits to be sent again: nothing overtakes it.
                await asyncio.wait({backoff})
                continue
            source = self._redo or self._items
            if not source:
                self._wake.clear()
                continue
            loop = asyncio.get_running_loop()
            rest_s = self._last_call + self.min_gap_s - loop.time()
            if rest_s > 0 and len(source) < self.batch_max:
                # Paced: what comes meanwhile goes in the same call.
                self._rest = loop.create_task(asyncio.sleep(rest_s))
                await self._rest
                continue
            self._last_call = loop.time()
            size = min(self.batch_max, len(source))
            batch = [source.popleft() for _ in range(size)]
            self.batches += 1
            self.sent += size
            try:
                ref = self._call(self.handle, batch)
            except Exception as exc:  # e.g. a batch that cannot be packed: the lane goes on
                self._failed(batch, exc)
                continue
            task = asyncio.get_running_loop().create_task(self._finish(batch, ref))
            inflight.append(task)

    async def _finish(self, batch: list[T], ref: Any) -> None:
        try:
            result = await ref
        except Exception as exc:  # a failed actor call must not stop the lane
            self._failed(batch, exc)
            return
        self._failures_in_a_row = 0
        await self._on_result(self, batch, result)

    def _failed(self, batch: list[T], exc: BaseException) -> None:
        if not self._on_failure(self, batch, exc):
            return
        self._failures_in_a_row += 1
        if self._failures_in_a_row > MAX_REDOS:
            self.dropped += len(batch)
            log.error(
                "dropping a batch of %d after %d failed calls in a row: %s",
                len(batch),
                MAX_REDOS + 1,
                exc,
            )
            return
        delay = min(REDO_MAX_DELAY_S, REDO_DELAY_S * 2 ** (self._failures_in_a_row - 1))
        self._backoff = asyncio.get_running_loop().create_task(
            self._redo_later(batch, delay, self._backoff)
        )
        self._wake.set()

    async def _redo_later(
        self, batch: list[T], delay_s: float, previous: asyncio.Task[None] | None
    ) -> None:
        # Batches redone one after another keep their order: each waits for the
        # back-off of the one before.
        await asyncio.sleep(delay_s)
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        self.redo(batch)

    async def settled(self) -> None:
        """Return once nothing is queued or in flight."""
        while self.busy:
            pending = [t for t in self._inflight if not t.done()]
            if self._rest is not None and not self._rest.done():
                pending.append(self._rest)
            if pending:
                await asyncio.wait(pending)
            else:
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop sending; cancel calls still awaited."""
        tasks = [
            self._task,
            *self._inflight,
            *([self._backoff] if self._backoff else []),
            *([self._rest] if self._rest else []),
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._items.clear()
        self._redo.clear()
