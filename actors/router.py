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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ray.exceptions import RayActorError

from marmot.actors.lanes import Lane
from marmot.actors.metrics import Metrics
from marmot.actors.runtime import AutomationRef, Reply
from marmot.actors.store.database import WriteBusy
from marmot.actors.store.events import DUPLICATE_ID_OTHER_CONTENT, EventLog
from marmot.actors.store.followers import HeldFollowers
from marmot.actors.wire import Outcome, pack_batch, pack_event, pack_events, unpack_event
from marmot.config import RouterConfig
from marmot.engine.causal import CausalOrdering
from marmot.engine.clock import Clock, EventsClock
from marmot.engine.errors import MarmotError
from marmot.engine.interest import InterestIndex
from marmot.engine.matching import TriggerMatcher
from marmot.engine.models.events import Event
from marmot.engine.timestamps import from_us, to_us

log = logging.getLogger(__name__)

OutcomeHandler = Callable[[Outcome], Awaitable[None]]
# Puts automations back into a restarted actor (submitting the load calls).
ReloadHandler = Callable[[Sequence[str]], None]
# (sequence number, target automations, the event, the event packed)
Row = tuple[int, list[str], Event, bytes]


def _apply(actor: AutomationRef, rows: list[Row]) -> Reply[Outcome]:
    return actor.apply(pack_batch([(seq, targets, body) for seq, targets, _, body in rows]))


# A group commit this small is written on the event loop: handing it to a
# thread and back costs more (two GIL hand-offs, several ms under load) than
# the write. Bigger ones go to a thread, so decoding goes on while they commit.
INLINE_APPEND_EVENTS = 64


@dataclass
class RouterStats:
    """Counters the daemon exposes as metrics."""

    received: int = 0
    routed: int = 0
    backpressure_waits: int = 0
    # Small appends that found the write lock taken and went to a thread.
    append_waits: int = 0


class Router:
    """Routes events from ingest and RPC to automation actors."""

    def __init__(
        self,
        event_log: EventLog,
        settings: RouterConfig,
        on_outcome: OutcomeHandler,
        clock: Clock,
        on_missing: ReloadHandler = lambda ids: None,
        metrics: Metrics | None = None,
        followers: HeldFollowers | None = None,
    ) -> None:
        """``followers`` keeps the followers held back durable (see ``restore``)."""
        self._event_log = event_log
        self._followers = followers
        self._metrics = metrics or Metrics()
        # Re-sent ids with other content: acknowledged, not stored, counted here.
        event_log.count_conflicts_with(
            self._metrics.events_dropped.labels(DUPLICATE_ID_OTHER_CONTENT).inc
        )
        self.settings = settings
        self._on_outcome = on_outcome
        self._on_missing = on_missing
        self._clock = clock
        self.index: InterestIndex[str] = InterestIndex()
        self._actor_of: dict[str, str] = {}
        self._lanes: dict[str, Lane[Row]] = {}
        lag = settings.events_clock_max_lag_s
        self.events_clock = EventsClock(None if lag is None else round(lag * 1_000_000))
        self._behind_reported = (0, 0)  # (events behind counted, when last logged µs)
        # Marmot's rules on top of Prefect's: a cycle of followers does not wait,
        # and the followers held are bounded (SEMANTICS §6, docs/semantics.md).
        self.causal = CausalOrdering(release_cycles=True, max_waiting=settings.max_held_followers)
        self.stats = RouterStats()
        self._pending: list[tuple[Sequence[Event], list[bytes], asyncio.Future[list[int]]]] = []
        self._pending_wake = asyncio.Event()
        # Submits of the daemon's own events (backpressure off: automation.triggered,
        # action.*), which a full disk holds back instead of failing.
        self._own: set[asyncio.Future[list[int]]] = set()
        self._admission = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._lost_wake = asyncio.Event()
        self._lost_task: asyncio.Task[None] | None = None
        # The last sequence number routed, and followers held back (by event id:
        # their sequence number and packed event).
        self._routed_upto = 0
        self._held: dict[Any, tuple[int, bytes]] = {}
        self._released: list[Any] = []  # held followers routed since the store was told

    # -- routes ------------------------------------------------------------------

    def add_actor(self, key: str, handle: AutomationRef) -> None:
        """Register (or replace the reference of) an automation actor."""
        lane = self._lanes.get(key)
        if lane is not None:
            lane.handle = handle
            return
        self._lanes[key] = Lane(
            handle,
            _apply,
            self._handle_outcome,
            lambda lane, batch, exc: self._failed(key, exc),
            batch_max=self.settings.batch_max_events,
            max_inflight=self.settings.max_inflight_per_actor,
        )

    def remove_actor(self, key: str) -> None:
        """Forget an actor; its queued events are dropped (its automations are gone)."""
        lane = self._lanes.pop(key, None)
        if lane is not None:
            asyncio.get_running_loop().create_task(lane.close())

    async def _handle_outcome(self, lane: Lane[Row], batch: list[Row], outcome: Outcome) -> None:
        if outcome.missing:
            # Ray restarted the actor empty: reload its automations, then send
            # their events of this batch again (the load call goes first).
            missing = set(outcome.missing)
            self._on_missing(outcome.missing)
            lane.redo(
                (seq, [a for a in targets if a in missing], event, body)
                for seq, targets, event, body in batch
                if missing.intersection(targets)
            )
        await self._on_outcome(outcome)

    def _failed(self, key: str, exc: BaseException) -> bool:
        self._metrics.actor_call_failures.labels("apply").inc()
        log.error("automation actor call failed: %s", exc, extra={"actor": key})
        if isinstance(exc, RayActorError):
            # The actor died with the batch: Ray restarts it empty, and recovery
            # (its checkpoint, then the log, where the batch's events are) puts
            # back what it held; the recover calls go ahead of later batches.
            automation_ids = sorted(a for a, k in self._actor_of.items() if k == key)
            if automation_ids:
                self._on_missing(automation_ids)
        return False

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
    def calls(self) -> tuple[int, int]:
        """Calls made to automation actors so far, and the events they carried."""
        lanes = self._lanes.values()
        return sum(lane.batches for lane in lanes), sum(lane.sent for lane in lanes)

    @property
    def queued(self) -> int:
        """Events waiting to be sent to actors, over all actors."""
        return sum(lane.queued for lane in self._lanes.values())

    def offset_us(self) -> int:
        """The events clock's offset (SEMANTICS §6)."""
        return self.events_clock.offset_us()

    async def submit(self, events: Sequence[Event], *, backpressure: bool = True) -> list[int]:
        """Log, then route, a batch of validated events (``received`` stamped).

        Returns their sequence numbers once they are in the durable log. Waits
        while too many events are queued for actors, unless ``backpressure``
        is off (the daemon's own automation events, which must never wait on
        the queue they are draining). Raises ``ValueError`` (and logs nothing)
        if an event cannot be packed.
        """
        if not events:
            return []
        # Packed once, here: the log stores these bytes and batches carry them.
        # An event that cannot be packed fails its own submitter, nobody else.
        try:
            bodies = pack_events(events)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"an event cannot be stored: {exc}") from exc
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        if backpressure:
            # Admitted in call order (the lock is first come, first served),
            # also when one of them has to wait for the actors to catch up.
            async with self._admission:
                if self.queued >= self.settings.max_queued_events:
                    # Stop and wait: the actors are behind, so ingest slows to their pace.
                    self.stats.backpressure_waits += 1
                    await self.drain()
                self._pending.append((events, bodies, done))
        else:
            self._own.add(done)
            self._pending.append((events, bodies, done))
        self._pending_wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        return await done

    async def _write_loop(self) -> None:
        # Group commit: whatever was submitted while the last transaction ran
        # (ingest, automation.triggered and action events) goes in the next one,
        # then is routed in submission order.
        held_s = 0.0  # the back-off while the store refuses writes (a full disk)
        while True:
            await self._pending_wake.wait()
            self._pending_wake.clear()
            if not self._pending:
                continue
            batch, self._pending = self._pending, []
            flat = [event for events, _, _ in batch for event in events]
            bodies = [body for _, packed, _ in batch for body in packed]
            try:
                seqs = await self._append(flat, bodies)
            except Exception as exc:  # handed to every submitter; the loop goes on
                # The daemon's own events wait out a full disk, first in line, written
                # again after a back-off for as long as it lasts: no firing is lost.
                # Other submitters get the (retryable) error and send again themselves.
                hold = isinstance(exc, MarmotError) and exc.is_retryable
                kept = [p for p in batch if hold and p[2] in self._own and not p[2].done()]
                for _, _, done in batch:
                    if not done.done() and not (hold and done in self._own):
                        done.set_exception(exc)
                    if done.done():
                        self._own.discard(done)
                if kept:
                    self._pending[:0] = kept
                    held_s = min(max(held_s * 2, 0.05), 1.0)
                    await asyncio.sleep(held_s)
                    self._pending_wake.set()
                continue
            held_s = 0.0
            self._own.difference_update(done for _, _, done in batch)
            self._route_logged(flat, bodies, seqs)
            start = 0
            for events, _, done in batch:
                if not done.done():
                    done.set_result(seqs[start : start + len(events)])
                start += len(events)

    def _route_logged(
        self, events: Sequence[Event], bodies: Sequence[bytes], seqs: Sequence[int]
    ) -> None:
        self.stats.received += len(events)
        now = self._clock.now_us()
        newly_held: list[tuple[Any, int, int]] = []
        offer, observe = self.causal.offer_us, self.events_clock.observe_us
        for seq, event, body in zip(seqs, events, bodies, strict=True):
            ready = offer(event, now)
            if ready is None:
                # Processed already (its log row is the first one's): dropped before
                # anything sees it, the events clock included (SEMANTICS §6).
                self._metrics.events_dropped.labels("duplicate").inc()
                continue
            observe(to_us(event.occurred), now)
            if self.events_clock.behind != self._behind_reported[0]:
                self._report_behind(event, now)
            if not ready:
                self._held[event.id] = (seq, body)
                newly_held.append((event.id, seq, now))
                self._lost_wake.set()
                self._ensure_lost_task()
            for item in ready:
                if item is event:
                    self._route_one(seq, event, body)
                else:
                    self._route_held(item)
        if self._followers is not None and newly_held:
            self._followers.hold(newly_held)
        for item in self.causal.over_bound(from_us(now)):
            self._metrics.followers_released.labels("bound").inc()
            self._route_held(item)
        self._forget_released()
        if seqs:
            self._routed_upto = max(self._routed_upto, seqs[-1])

    def _report_behind(self, event: Event, now: int) -> None:
        """Count events that occurred further behind the wall clock than the events
        clock may trail it; log at most every 10 s, with how many there were."""
        counted, logged_at = self._behind_reported
        fresh = self.events_clock.behind - counted
        self._metrics.events_behind.inc(fresh)
        if now - logged_at >= 10_000_000 or logged_at == 0:
            log.warning(
                "%d event(s) occurred more than %g s before they arrived (e.g. %s of %s, "
                "occurred %s): the events clock does not follow them further back",
                fresh,
                self.settings.events_clock_max_lag_s or 0,
                event.event,
                event.resource_id,
                event.occurred.isoformat(),
            )
            logged_at = now
        self._behind_reported = (self.events_clock.behind, logged_at)

    async def _append(self, events: list[Event], bodies: list[bytes]) -> list[int]:
        """Log events: a small group commit on the event loop unless another thread or
        process holds the write lock (an actor's checkpoint, an executor's action
        log): then, as a big one, in a thread, so the loop never waits for a lock."""
        if len(events) <= INLINE_APPEND_EVENTS:
            try:
                return self._event_log.append(events, bodies, wait=False)
            except WriteBusy:
                self.stats.append_waits += 1
        return await asyncio.to_thread(self._event_log.append, events, bodies)

    def sent_upto(self, actor: str) -> int:
        """A sequence number up to which every logged event that ``actor`` must see
        has been sent to it (calls reach it in order): a checkpoint there is safe."""
        upto = self._routed_upto
        if self._held:
            upto = min(upto, min(seq for seq, _ in self._held.values()) - 1)
        lane = self._lanes.get(actor)
        if lane is not None:
            first = next((abs(row[0]) for row in lane.waiting() if row[0]), None)
            if first is not None:
                upto = min(upto, first - 1)
        return upto

    def _route_held(self, event: Event) -> None:
        """Route a follower that was held back, with its sequence number negated: its
        place in the log is behind events the actors saw since, so a recovered actor
        must not take it for one it replayed, while checkpoints still stop before it
        until it is applied."""
        held = self._held.pop(event.id, None)
        if held is None:
            self._route_one(0, event, pack_event(event))
            return
        self._released.append(event.id)
        self._route_one(-held[0], event, held[1])

    def _forget_released(self) -> None:
        if self._followers is not None and self._released:
            self._followers.release(self._released)
        self._released = []

    def held_seqs(self) -> list[int]:
        """The sequence numbers of the followers held back now."""
        return [seq for seq, _ in self._held.values()]

    def restore_held(self) -> list[int]:
        """Hold again the followers that were held when the daemon stopped (from the
        store), with their delivery times; returns their sequence numbers, which a
        recovery's replay of the log must skip (they are routed when released)."""
        if self._followers is None:
            return []
        rows = self._followers.all()
        bodies = dict(self._event_log.read_seqs([seq for _, seq, _ in rows]))
        restored: list[int] = []
        gone: list[Any] = []
        for event_id, seq, received in rows:
            body = bodies.get(seq)
            if body is None:
                gone.append(event_id)  # trimmed from the log meanwhile
                continue
            event = unpack_event(body)
            self.causal.hold(event, received)
            self._held[event.id] = (seq, body)
            restored.append(seq)
        self._followers.release(gone)
        if restored:
            self._lost_wake.set()
            self._ensure_lost_task()
            log.info("holding %d follower(s) again, as before the restart", len(restored))
        return restored

    def _route_one(self, seq: int, event: Event, body: bytes) -> None:
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
            if lane is not None:
                lane.put(((seq, automation_ids, event, body),))

    async def drain(self, actors: Sequence[str] | None = None, timeout_s: float = 60.0) -> None:
        """Wait until the queued events of ``actors`` (default: all) have been applied."""
        keys = self._lanes.keys() if actors is None else actors
        lanes = [self._lanes[k] for k in keys if k in self._lanes]
        await asyncio.wait_for(asyncio.gather(*(lane.settled() for lane in lanes)), timeout_s)

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
            delay = (to_us(deadline) - self._clock.now_us()) / 1e6
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost_wake.wait(), delay)
                continue
            # Routing never awaits, so it cannot interleave with the writer's.
            now = self._clock.now_us()
            for event in self.causal.release_lost(from_us(now)):
                self.events_clock.observe_us(to_us(event.occurred), now)
                self._metrics.followers_released.labels("lost").inc()
                self._route_held(event)
            self._forget_released()

    async def close(self) -> None:
        """Stop the send loops and the lost-follower timer."""
        await asyncio.gather(*(lane.close() for lane in self._lanes.values()))
        self._lanes.clear()
        for task in (self._lost_task, self._writer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
