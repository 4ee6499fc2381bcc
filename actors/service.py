"""The daemon's core: a façade over the parts that run automations.

``Service`` wires ``Placement`` (automations in actors), the ``Router``
(events to them), the ``TimerLink`` (deadlines), the ``Dispatcher``
(firings to executors) and ``Upkeep`` (checkpoints, retention), and offers
the coarse operations the RPC layer calls: create / update / pause / resume
/ delete / explain automations, emit events, status. Each part owns its
state and reports through the callbacks given here; none calls back into
``Service``. It knows nothing of sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from marmot.actors.action_runs import RegistryRequest, RunnerFactory
from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.dispatch import Dispatcher
from marmot.actors.loops import LoopGuard, loop_stopped_event
from marmot.actors.metrics import Metrics
from marmot.actors.placement import Placement
from marmot.actors.router import Router
from marmot.actors.runtime import RayRuntime
from marmot.actors.startup import StartupProgress
from marmot.actors.store import Store, StoredAutomation
from marmot.actors.tasks import TaskGroup
from marmot.actors.timer_link import TimerLink
from marmot.actors.upkeep import Upkeep
from marmot.actors.wire import Outcome
from marmot.config import MarmotConfig
from marmot.engine.clock import Clock
from marmot.engine.errors import LimitExceeded
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.models.explain import Explanation
from marmot.engine.triggers.firing import Firing

log = logging.getLogger(__name__)

__all__ = ["Service"]

# Automations recovered together at start-up (each part one call per actor).
RECOVER_PART = 1000


class Service:
    """Automations in actors, events through the router, firings to executors."""

    def __init__(
        self,
        runtime: RayRuntime,
        store: Store,
        config: MarmotConfig,
        *,
        runner_factory: RunnerFactory | None = None,
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        progress: StartupProgress | None = None,
        recovery_gate: asyncio.Event | None = None,
    ) -> None:
        """``runner_factory`` builds the action runners inside each executor (None:
        only do-nothing runs); ``progress`` is told how recovery goes (for status
        while starting); ``recovery_gate``, when given, holds ``start()`` before
        recovering any automation until it is set (for embedders and tests that act
        on a daemon while it starts)."""
        self.runtime = runtime
        self.store = store
        self.config = config
        self.metrics = metrics or Metrics()
        self._clock = clock
        self.progress = progress if progress is not None else StartupProgress()
        self._recovery_gate = recovery_gate
        # Told of the daemon's own events (automation.*, action.*) once they are
        # logged; each must return at once (it may queue them, never wait).
        self.own_event_watchers: list[Callable[[Sequence[Event]], None]] = []
        self._tasks = TaskGroup()
        self._lock = asyncio.Lock()
        self.router = Router(
            store.events,
            config.router,
            self._on_outcome,
            clock,
            on_missing=lambda ids: self.placement.reload(ids),
            metrics=self.metrics,
            followers=store.followers,
        )
        self.placement = Placement(
            runtime,
            self.router,
            store,
            per_actor=config.automations_per_actor,
            resolved_states=config.resolved_states,
            max_keys=config.limits.max_buckets_per_trigger,
            on_outcome=self._on_outcome,
            on_recovered=self._on_recovered,
            on_deadlines=lambda deadlines: self.timers.schedule_soon(deadlines),
            metrics=self.metrics,
            tasks=self._tasks,
            clock=clock,
        )
        self.timers = TimerLink(
            runtime,
            self.router.offset_us,
            self.placement.expire,
            self.metrics,
            self._tasks,
            clock,
        )
        self.dispatcher = Dispatcher(
            runtime,
            store,
            config,
            runner_factory,
            automation=self.placement.automation,
            document=self.placement.documents.get,
            emit=self._emit_own,
            on_registry=self._apply_registry,
            metrics=self.metrics,
            tasks=self._tasks,
        )
        self.upkeep = Upkeep(store, config.data, self.checkpoint, self.metrics, clock)
        self._loops = LoopGuard(
            config.limits.loop_firings, round(config.limits.loop_window_s * 1_000_000)
        )
        self._stopping: set[str] = set()
        # Read when /metrics is scraped.
        self.metrics.queue_depth.set_function(lambda: self.router.queued)
        self.metrics.executor_queue_depth.set_function(lambda: self.dispatcher.queued)
        self.metrics.backpressure_waits.set_function(lambda: self.router.stats.backpressure_waits)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the timer and executors and load every enabled automation."""
        self.runtime.start()
        self.placement.layout.budget = self._actor_budget()
        self.placement.layout.cores = max(float(self.runtime.capacity(0)["cpus"]), 1.0)
        self.timers.start()
        self.dispatcher.start()
        self.upkeep.start(self._tasks)
        # Before any automation recovers: their replays skip what is held again.
        self.router.restore_held()
        enabled = [s.automation for s in self.store.automations.list(enabled=True)]
        if self.placement.layout.plan(len(enabled)):
            self._tell_packing(len(enabled))
        self.progress.begin_recovery(len(enabled))
        if self._recovery_gate is not None:
            await self._recovery_gate.wait()
        await self._recover_all(enabled)
        await self.dispatcher.ready()
        self.metrics.automations.set(len(self.placement.automations))
        log.info("service started", extra={"automations": len(enabled)})

    def _actor_budget(self) -> int:
        """How many automation actors this daemon may run: what the node holds
        beside the executors and the timer, or ``max_automation_actors``."""
        others = self.config.executors.pool_size + 1
        limit = int(self.runtime.capacity(others)["actors_free"])
        if self.config.max_automation_actors is not None:
            limit = min(limit, self.config.max_automation_actors)
        return max(limit, 1)

    def _tell_packing(self, fleet: int) -> None:
        layout = self.placement.layout
        log.warning(
            "%d automations are more than the %d automation actors this node holds "
            "(marmot status: capacity; max_automation_actors): packing them into shared "
            "actors of up to %d (automations_per_actor: auto)",
            fleet,
            layout.budget,
            layout.per_actor,
        )

    async def _grow_to(self, fleet: int) -> None:
        """Before hosting more automations: turn the layout packed if the fleet no
        longer fits one actor each, and move the automations in actors of their own."""
        if not self.placement.layout.plan(fleet):
            return
        self._tell_packing(fleet)
        self._tasks.spawn(self._repack())

    async def _repack(self) -> None:
        moved = 0
        for automation_id in self.placement.alone():
            async with self._lock:
                try:
                    moved += await self.placement.move(automation_id)
                except Exception:
                    self.metrics.actor_call_failures.labels("move").inc()
                    log.exception("could not move automation %s into a shared actor", automation_id)
        log.info("packed %d automation(s) from actors of their own into shared actors", moved)

    async def _recover_all(self, automations: Sequence[Automation]) -> None:
        """Recover the fleet in parts, so start-up progress moves as it goes."""
        for start in range(0, len(automations), RECOVER_PART):
            part = automations[start : start + RECOVER_PART]
            await self.placement.place_many(part, recover=True)
            for _ in part:
                self.progress.recovered_one()

    @property
    def tasks(self) -> TaskGroup:
        """The daemon's background tasks (all cancelled when it stops)."""
        return self._tasks

    async def stop(self) -> None:
        """Checkpoint, then stop every actor this service created."""
        await self.router.close()
        if self.placement.actor_count:
            with contextlib.suppress(Exception):
                await self.checkpoint()
        await self.dispatcher.stop()
        await self.timers.stop()
        await self._tasks.cancel()
        self.placement.kill_all()
        for executor in self.dispatcher.executors:
            self.runtime.kill(executor)
        self.dispatcher.executors = []
        if self.timers.timer is not None:
            self.runtime.kill(self.timers.timer)
            self.timers.timer = None

    async def checkpoint(self, timeout_s: float = 30.0) -> int:
        """Checkpoint every automation actor now; returns how many automations were saved."""
        return await self.placement.checkpoint(timeout_s)

    async def maintain(self) -> dict[str, Any]:
        """Checkpoint, trim the event log and fold the WAL (``marmot admin checkpoint``)."""
        return await self.upkeep.maintain()

    async def trim_events(self) -> int:
        """Delete events older than the retention that no checkpoint's replay needs."""
        return await self.upkeep.trim_events()

    # -- what the parts report -------------------------------------------------------

    async def _on_outcome(self, outcome: Outcome) -> None:
        self.metrics.evaluations.inc(outcome.evaluated)
        if outcome.deadlines:
            self.timers.schedule_soon(outcome.deadlines)
        if outcome.firings:
            await self.dispatcher.dispatch(self._unless_looping(outcome.firings))

    def _unless_looping(self, firings: list[Firing]) -> list[Firing]:
        """The firings of automations that are not looping on their own events; an
        automation that is gets paused (see ``actors/loops.py``)."""
        now = self._clock.now_us()
        kept: list[Firing] = []
        for firing in firings:
            automation_id = str(firing.automation_id)
            if automation_id in self._stopping:
                continue
            if self._loops.is_looping(firing, now):
                self._stopping.add(automation_id)
                self._tasks.spawn(self._stop_loop(firing.automation_id))
                continue
            kept.append(firing)
        return kept

    async def _stop_loop(self, automation_id: UUID) -> None:
        limits = self.config.limits
        automation = self.placement.automation(str(automation_id))
        name = automation.name if automation is not None else str(automation_id)
        log.error(
            "automation %r fires on its own events (over %d firings in %g s): pausing it",
            name,
            limits.loop_firings,
            limits.loop_window_s,
            extra={"automation": str(automation_id)},
        )
        self.metrics.loops_stopped.inc()
        try:
            await self.set_enabled(automation_id, False)
            event = loop_stopped_event(
                automation_id, name, limits.loop_firings, limits.loop_window_s, self._clock.now()
            )
            await self._emit_own([event], False)
        except Exception:
            log.exception("could not pause looping automation %s", automation_id)
        finally:
            self._stopping.discard(str(automation_id))
            self._loops.forget(str(automation_id))

    async def _on_recovered(self, outcome: Outcome) -> None:
        """Act on what replaying the log produced, except what was dispatched before.

        A replayed firing whose triggered event is not in the log is dispatched
        in full; one whose event is logged but whose actions were never claimed
        (the daemon died in between) gets its actions only.
        """
        fresh, unclaimed = self.dispatcher.split_recovered(outcome)
        await self._on_outcome(dataclasses.replace(outcome, firings=fresh))
        if unclaimed:
            await self.dispatcher.dispatch(unclaimed, announce=False)

    async def _apply_registry(self, request: RegistryRequest) -> None:
        """A pause-automation / resume-automation action's change, made as the RPC would."""
        try:
            await self.set_enabled(UUID(request.automation_id), request.op == "resume")
        except Exception:
            log.exception(
                "could not %s automation %s for an action", request.op, request.automation_id
            )

    # -- automations --------------------------------------------------------------------

    def _check_room(self, automation_id: str) -> None:
        limit = self.config.max_automations
        if (
            automation_id not in self.placement.automations
            and len(self.placement.automations) >= limit
        ):
            raise LimitExceeded(
                f"this daemon runs at most {limit} automations (limits: max_automations)"
            )

    def _count(self) -> None:
        self.metrics.automations.set(len(self.placement.automations))

    async def create(self, automation: Automation) -> StoredAutomation:
        """Store a new automation and, if enabled, start evaluating it."""
        async with self._lock:
            if automation.enabled:
                self._check_room(str(automation.id))
            stored = self.store.automations.create(automation)
            if automation.enabled:
                await self._grow_to(len(self.placement.automations) + 1)
                await self.placement.place(stored.automation)
            self._count()
            return stored

    async def create_many(self, automations: Sequence[Automation]) -> list[StoredAutomation]:
        """Store new automations, all or none, then start evaluating the enabled ones
        (laid out for the whole fleet at once: see ``actors/packing.py``)."""
        async with self._lock:
            enabled = [a for a in automations if a.enabled]
            limit = self.config.max_automations
            if len(self.placement.automations) + len(enabled) > limit:
                raise LimitExceeded(
                    f"this daemon runs at most {limit} automations (limits: max_automations); "
                    f"{len(self.placement.automations)} run and {len(enabled)} more were asked for"
                )
            stored = self.store.automations.create_many(automations)
            await self._grow_to(len(self.placement.automations) + len(enabled))
            await self.placement.place_many([s.automation for s in stored if s.automation.enabled])
            self._count()
            return stored

    async def update(self, automation: Automation) -> StoredAutomation:
        """Replace an automation; its state resets (SEMANTICS §5)."""
        async with self._lock:
            if automation.enabled:
                self._check_room(str(automation.id))
            stored = self.store.automations.update(automation)
            automation_id = str(automation.id)
            if stored.automation.enabled:
                if automation_id not in self.placement.automations:
                    await self._grow_to(len(self.placement.automations) + 1)
                await self.placement.place(stored.automation)
            elif automation_id in self.placement.automations:
                await self.placement.unplace(automation_id)
            self._count()
            return stored

    async def set_enabled(self, automation_id: UUID, enabled: bool) -> StoredAutomation:
        """Pause (stop evaluating, forget state) or resume an automation."""
        async with self._lock:
            if enabled:
                self._check_room(str(automation_id))
            stored = self.store.automations.set_enabled(automation_id, enabled)
            key = str(automation_id)
            if enabled and key not in self.placement.automations:
                await self._grow_to(len(self.placement.automations) + 1)
                await self.placement.place(stored.automation)
            elif not enabled and key in self.placement.automations:
                await self.placement.unplace(key)
            if not enabled:
                self.store.checkpoints.delete(key)
            self._count()
            return stored

    async def delete(self, automation_id: UUID) -> None:
        """Delete an automation and stop evaluating it."""
        async with self._lock:
            self.store.automations.delete(automation_id)
            if str(automation_id) in self.placement.automations:
                await self.placement.unplace(str(automation_id))
            self.store.checkpoints.delete(str(automation_id))
            self._count()

    async def explain(
        self, automation_id: UUID, *, limit: int = 1000, offset: int = 0
    ) -> Explanation:
        """The live state of an automation's triggers, a page of ``limit`` buckets per
        trigger from ``offset`` (raises ``NotFound`` for an unknown automation; a
        paused one has no state)."""
        stored = self.store.automations.read(automation_id)
        found = await self.placement.explain(str(automation_id), limit, offset)
        if found is not None:
            return found
        return Explanation(
            automation_id=automation_id,
            name=stored.automation.name,
            enabled=stored.automation.enabled,
            triggers=[],
            next_deadline=None,
            open_buckets=0,
        )

    # -- events -----------------------------------------------------------------------

    async def emit(self, events: Sequence[Event], source: str = "rpc") -> list[int]:
        """Accept validated events; returns their sequence numbers once logged."""
        seqs = await self.router.submit(events, backpressure=source != "automation")
        self.metrics.events_received.labels(source).inc(len(events))
        self.timers.offset_changed()
        return seqs

    async def _emit_own(self, events: Sequence[Event], may_wait: bool) -> None:
        """Events the daemon makes itself (automation.triggered, action.*): they wait
        for backpressure like anyone's, unless ``may_wait`` is off."""
        seqs = await self.router.submit(events, backpressure=may_wait)
        self.metrics.events_received.labels("automation").inc(len(seqs))
        self.timers.offset_changed()
        for watcher in self.own_event_watchers:
            watcher(events)  # once logged (the Prefect write-back sends them on)

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts, queue depths and the node's remaining capacity."""
        actors = self.placement.actor_count
        capacity = self.runtime.capacity(actors + len(self.dispatcher.executors) + 1)
        layout = self.placement.layout
        loaded = len(self.placement.automations)
        # With auto, a new automation always finds an actor (packing when the
        # node is full): max_automations is the bound.
        room = self.config.max_automations - loaded
        if not layout.auto:
            room = min(room, capacity["actors_free"] * layout.per_actor)
        capacity["automations_free"] = max(room, 0)
        return {
            "automations_loaded": loaded,
            "automation_actors": actors,
            "automations_per_actor": self.config.automations_per_actor,
            "layout": layout.describe(),
            "executors": len(self.dispatcher.executors),
            "events_received": self.router.stats.received,
            "events_by_source": self.metrics.events_by_source(),
            "events_routed": self.router.stats.routed,
            "queued_events": self.router.queued,
            "held_followers": self.router.causal.waiting,
            "firings": self.dispatcher.firings_total,
            "events_clock_offset_s": self.router.offset_us() / 1e6,
            "timer_lateness_ms": self.timers.lateness_ms(),
            "capacity": capacity,
        }
