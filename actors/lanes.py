"""Batching lanes: one queue per actor, one Ray call per batch, bounded calls in flight.

While a call is in flight new items queue up, so batches grow with load and
a quiet lane sends at once (DESIGN.md: per-item Ray calls cannot be fast).
Calls on one lane are issued in order, so an actor sees its items in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Issues the Ray call for a batch and returns its ObjectRef (or any awaitable).
Call = Callable[[Any, list[T]], Any]
# Gets the lane, the batch it sent and the call's result.
ResultHandler = Callable[["Lane[Any]", list[Any], Any], Awaitable[None]]
FailureHandler = Callable[[BaseException], None]


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
    ) -> None:
        self.handle = handle
        self._call = call
        self._on_result = on_result
        self._on_failure = on_failure
        self.batch_max = batch_max
        self.max_inflight = max_inflight
        self._items: deque[T] = deque()
        self._redo: deque[T] = deque()
        self._inflight: deque[asyncio.Task[None]] = deque()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.batches = 0
        self.sent = 0

    @property
    def queued(self) -> int:
        """Items waiting to be sent."""
        return len(self._items) + len(self._redo)

    @property
    def busy(self) -> bool:
        """Whether items are queued or calls are in flight."""
        return bool(self._items or self._redo) or any(not t.done() for t in self._inflight)

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
            source = self._redo or self._items
            if not source:
                self._wake.clear()
                continue
            size = min(self.batch_max, len(source))
            batch = [source.popleft() for _ in range(size)]
            self.batches += 1
            self.sent += size
            try:
                ref = self._call(self.handle, batch)
            except Exception as exc:  # e.g. a batch that cannot be packed: the lane goes on
                self._on_failure(exc)
                continue
            task = asyncio.get_running_loop().create_task(self._finish(batch, ref))
            inflight.append(task)

    async def _finish(self, batch: list[T], ref: Any) -> None:
        try:
            result = await ref
        except Exception as exc:  # a failed actor call must not stop the lane
            self._on_failure(exc)
            return
        await self._on_result(self, batch, result)

    async def settled(self) -> None:
        """Return once nothing is queued or in flight."""
        while self.busy:
            pending = [t for t in self._inflight if not t.done()]
            if pending:
                await asyncio.wait(pending)
            else:
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop sending; cancel calls still awaited."""
        tasks = [self._task, *self._inflight]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._items.clear()
        self._redo.clear()
