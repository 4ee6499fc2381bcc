"""The router: log, order and route events to automation actors in batches.

Every accepted event is appended to the durable event log (one transaction
per batch), observed by the events clock, held back by causal ordering when
its leader has not been processed, and sent to the actors of the automations
interested in it. Each actor gets one call per batch: while a call is in
flight, new events queue up, so batches grow with load (DESIGN.md). In-flight
calls per actor are bounded, and so is the total queue: when automations fall
behind, ``submit`` waits instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from marmot.actors.wire import Batch, Outcome
from marmot.engine.causal import CausalOrdering
from marmot.engine.clock import EventsClock
from marmot.engine.interest import InterestIndex
from marmot.engine.matching import TriggerMatcher
from marmot.engine.models.events import Event
from marmot.engine.timestamps import from_us, to_us

log = logging.getLogger(__name__)

OutcomeHandler = Callable[[Outcome], Awaitable[None]]


class EventLog(Protocol):
    """The part of the store the router needs."""

    def append_events(self, events: Sequence[Event]) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Batching and backpressure bounds."""

    batch_max_events: int = 256
    max_inflight_per_actor: int = 8
    max_queued_events: int = 100_000


@dataclass
class RouterStats:
    """Counters the daemon exposes as metrics."""

    received: int = 0
    routed: int = 0
    batches: int = 0
    batch_events: int = 0
    held_followers: int = 0
    failed_calls: int = 0


@dataclass
class _Lane:
    """The queue and in-flight calls of one automation actor."""

    handle: Any
    rows: deque[tuple[int, list[str], Event]] = field(default_factory=deque)
    inflight: deque[asyncio.Task[None]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Router:
    """Routes events from ingest and RPC to automation actors."""

    def __init__(
        self,
        log_store: EventLog,
        settings: RouterSettings,
        on_outcome: OutcomeHandler,
        clock_us: Callable[[], int],
    ) -> None:
        self._store = log_store
        self.settings = settings
        self._on_outcome = on_outcome
        self._clock_us = clock_us
        self.index: InterestIndex[str] = InterestIndex()
        self._actor_of: dict[str, str] = {}
        self._lanes: dict[str, _Lane] = {}
        self.events_clock = EventsClock()
        self.causal = CausalOrdering()
        self.stats = RouterStats()
        self._queued = 0
        self._space = asyncio.Event()
        self._space.set()
        self._append_lock = asyncio.Lock()
        self._lost_wake = asyncio.Event()
        self._lost_task: asyncio.Task[None] | None = None

    # -- routes ------------------------------------------------------------------

    def add_actor(self, key: str, handle: Any) -> None:
        """Register (or replace the handle of) an automation actor."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(handle)
            lane.task = asyncio.get_running_loop().create_task(self._send_loop(key, lane))
        else:
            lane.handle = handle

    def remove_actor(self, key: str) -> None:
        """Forget an actor; its queued events are dropped (its automations are gone)."""
        lane = self._lanes.pop(key, None)
        if lane is not None:
            self._queued -= len(lane.rows)
            if lane.task is not None:
                lane.task.cancel()
            self._space.set()

    def route(self, automation_id: str, actor_key: str, matchers: Sequence[TriggerMatcher]) -> None:
        """Send events that ``matchers`` are interested in to ``actor_key``."""
        self._actor_of[automation_id] = actor_key
        self.index.set(automation_id, matchers)

    def unroute(self, automation_id: str) -> None:
        """Stop sending events for an automation."""
        self._actor_of.pop(automation_id, None)
        self.index.remove(automation_id)

    # -- events ------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Events waiting to be sent to actors, over all actors."""
        return self._queued

    def offset_us(self) -> int:
        """The events clock's offset (SEMANTICS §6)."""
        return self.events_clock.offset_us()

    async def submit(self, events: Sequence[Event], *, backpressure: bool = True) -> list[int]:
        """Log, then route, a batch of validated events (``received`` stamped).

        Returns their sequence numbers once they are in the durable log. Waits
        while too many events are queued for actors, unless ``backpressure``
        is off (the daemon's own automation events, which must never wait on
        the queue they are draining).
        """
        if not events:
            return []
        while backpressure and self._queued >= self.settings.max_queued_events:
            self._space.clear()
            await self._space.wait()
        async with self._append_lock:
            seqs = await asyncio.to_thread(self._store.append_events, events)
            self.stats.received += len(events)
            now = self._clock_us()
            for seq, event in zip(seqs, events, strict=True):
                self.events_clock.observe_us(to_us(event.occurred), now)
                ready = self.causal.admit_us(event, now)
                if not ready:
                    self.stats.held_followers += 1
                    self._lost_wake.set()
                    self._ensure_lost_task()
                for item in ready:
                    self._route_one(seq if item is event else 0, item)
        return seqs

    def _route_one(self, seq: int, event: Event) -> None:
        targets = self.index.route(event)
        if not targets:
            return
        self.stats.routed += 1
        by_actor: dict[str, list[str]] = {}
        for automation_id in targets:
            actor = self._actor_of.get(automation_id)
            if actor is not None:
                by_actor.setdefault(actor, []).append(automation_id)
        for actor, automation_ids in by_actor.items():
            lane = self._lanes.get(actor)
            if lane is None:
                continue
            lane.rows.append((seq, automation_ids, event))
            self._queued += 1
            lane.wake.set()

    # -- sending -------------------------------------------------------------------

    async def _send_loop(self, key: str, lane: _Lane) -> None:
        limit = self.settings.max_inflight_per_actor
        size = self.settings.batch_max_events
        while True:
            await lane.wake.wait()
            while lane.inflight and (len(lane.inflight) >= limit or lane.inflight[0].done()):
                await asyncio.wait({lane.inflight[0]})
                lane.inflight.popleft()
            if not lane.rows:
                lane.wake.clear()
                continue
            rows = [lane.rows.popleft() for _ in range(min(size, len(lane.rows)))]
            self._queued -= len(rows)
            self._space.set()
            self.stats.batches += 1
            self.stats.batch_events += len(rows)
            ref = lane.handle.apply.remote(Batch(rows).pack())
            lane.inflight.append(asyncio.get_running_loop().create_task(self._finish(key, ref)))

    async def _finish(self, key: str, ref: Any) -> None:
        try:
            outcome = Outcome.unpack(await ref)
        except Exception:  # a failed actor call must not stop the lane
            self.stats.failed_calls += 1
            log.exception("automation actor call failed", extra={"actor": key})
            return
        await self._on_outcome(outcome)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued event has been applied (tests, shutdown)."""

        async def settled() -> None:
            while True:
                busy = [t for lane in self._lanes.values() for t in lane.inflight if not t.done()]
                if not self._queued and not busy:
                    return
                if busy:
                    await asyncio.wait(busy)
                else:
                    await asyncio.sleep(0)

        await asyncio.wait_for(settled(), timeout_s)

    # -- lost followers ----------------------------------------------------------------

    def _ensure_lost_task(self) -> None:
        if self._lost_task is None or self._lost_task.done():
            self._lost_task = asyncio.get_running_loop().create_task(self._release_lost())

    async def _release_lost(self) -> None:
        # Wakes at the lookback deadline of the oldest waiting follower
        # (SEMANTICS §6); sleeps on an event otherwise, never polls.
        while True:
            self._lost_wake.clear()
            deadline = self.causal.next_deadline()
            if deadline is None:
                await self._lost_wake.wait()
                continue
            delay = (to_us(deadline) - self._clock_us()) / 1e6
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost_wake.wait(), delay)
                continue
            async with self._append_lock:
                now = self._clock_us()
                for event in self.causal.release_lost(from_us(now)):
                    self.events_clock.observe_us(to_us(event.occurred), now)
                    self._route_one(0, event)

    async def close(self) -> None:
        """Stop the send loops."""
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if self._lost_task is not None:
            tasks.append(self._lost_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
