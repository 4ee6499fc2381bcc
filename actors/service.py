"""The daemon's core: automations placed in actors, firings carried to executors.

``Service`` owns the automation registry (store + live actors), the router,
the timer actor and the executor pool, and offers the coarse operations the
RPC layer calls: create / update / pause / resume / delete / explain
automations and emit events. It knows nothing of sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from ray.exceptions import RayActorError

from marmot.actors.actionkit import ActionSettings, RegistryRequest, RunnerFactory
from marmot.actors.deadlines import DeadlineLedger
from marmot.actors.executor import (
    ExecutorHost,
    ExecutorResults,
    action_events_from_blob,
    firing_key,
)
from marmot.actors.lanes import Lane, first_idle
from marmot.actors.metrics import Metrics
from marmot.actors.router import Router, RouterSettings
from marmot.actors.runtime import RayRuntime
from marmot.actors.startup import StartupProgress
from marmot.actors.store import Store, StoredAutomation
from marmot.actors.timer import wall_us
from marmot.actors.wire import Outcome, event_to_wire, firing_to_wire, pack
from marmot.engine.errors import LimitExceeded, NotFound
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.timestamps import from_us
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing, TriggerState, triggered_event

log = logging.getLogger(__name__)

# A proactive evaluation this long after its deadline (timer lateness is tens
# of milliseconds) ran because the daemon or its timer was down: its firing is
# marked late.
LATE_AFTER_US = 1_000_000
# While the timer holds deadlines, it is told the events clock's offset when it
# moved this much, at most this often (see Service._push_offset).
OFFSET_SLACK_US = 2_000
OFFSET_PUSH_INTERVAL_S = 0.01

# Firings wait this long for company before they go to an executor (unless
# 200 are queued): fewer, fuller calls. An action starts this much later; at
# 2,000 events/s with 1 in 10 firing, executors used ~40% of a core without
# it and ~25% with it, and publish-to-firing p99 went from ~50-70 to ~35-45 ms.
EXECUTOR_LINGER_S = 0.02

# (automation id, firing, automation.triggered event) in wire form.
_Job = tuple[str, list[Any], list[Any]]


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """How automations are placed and executed."""

    data_dir: Path
    automations_per_actor: int = 1
    # Resolved states (SEMANTICS §5, Marmot's opt-in extension).
    resolved_states: bool = False
    executor_pool_size: int = 2
    max_automations: int = 1000
    checkpoint_interval_s: float = 5.0
    retention_days: float = 7.0
    retention_check_s: float = 300.0
    router: RouterSettings = field(default_factory=RouterSettings)
    actions: ActionSettings = field(default_factory=ActionSettings)
    # Builds the action runners inside each executor actor (picklable; None:
    # only do-nothing runs). The daemon passes the transport layer's factory.
    runner_factory: RunnerFactory | None = None


@dataclass
class _Placement:
    handle: Any
    automations: set[str] = field(default_factory=set)


class Service:
    """Automations in actors, events through the router, firings to executors."""

    def __init__(
        self,
        runtime: RayRuntime,
        store: Store,
        settings: ServiceSettings,
        metrics: Metrics | None = None,
        clock_us: Callable[[], int] = wall_us,
        *,
        progress: StartupProgress | None = None,
        recovery_gate: asyncio.Event | None = None,
    ) -> None:
        """``progress`` is told how recovery goes (for status while starting);
        ``recovery_gate``, when given, holds ``start()`` before recovering any
        automation until it is set (for embedders and tests that act on a
        daemon while it starts)."""
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._clock_us = clock_us
        self.progress = progress if progress is not None else StartupProgress()
        self._recovery_gate = recovery_gate
        self.router = Router(
            store.events, settings.router, self._on_outcome, clock_us, on_missing=self._reload
        )
        self._automations: dict[str, Automation] = {}
        self._documents: dict[str, str] = {}
        self._actor_of: dict[str, str] = {}
        self._actors: dict[str, _Placement] = {}
        self._executors: list[Any] = []
        self._executor_lanes: list[Lane[_Job]] = []
        self._timer: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()
        self._last_offset: int | None = None
        self._offset_pusher: asyncio.Task[None] | None = None
        self._deadlines = DeadlineLedger()
        self._timer_lane: Lane[tuple[str, int | None]] | None = None
        self._store_factory = functools.partial(Store.open, store.path)
        # Read when /metrics is scraped.
        self.metrics.queue_depth.set_function(lambda: self.router.queued)
        self.metrics.executor_queue_depth.set_function(
            lambda: sum(lane.queued for lane in self._executor_lanes)
        )
        self.metrics.backpressure_waits.set_function(lambda: self.router.stats.backpressure_waits)
        self.firings_total = 0
        # Recent timer lateness (seconds), for `marmot status`.
        self.lateness: deque[float] = deque(maxlen=2048)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the timer and executors and load every enabled automation."""
        self.runtime.start()
        self._timer = self.runtime.timer_actor()
        self._timer_lane = Lane(
            self._timer,
            self._schedule,
            _ignore_result,
            self._timer_failed,
            batch_max=10_000,
            max_inflight=1,
        )
        log_factory = self._store_factory
        names = [f"executor-{i}" for i in range(self.settings.executor_pool_size)]
        # No executor of the last run is alive: its unfinished claims go to this pool.
        orphans = self.store.actions.orphan_claims(names)
        if orphans:
            log.warning("%d action(s) left unfinished by the last run will be carried out", orphans)
        self._executors = [
            self.runtime.executor_actor(
                name,
                ExecutorHost,
                log_factory,
                self.settings.actions,
                self.settings.runner_factory,
                name,
            )
            for name in names
        ]
        self._executor_lanes = [
            Lane(
                handle,
                self._execute,
                self._actions_done,
                self._executor_failed,
                batch_max=200,
                max_inflight=1,
                linger_s=EXECUTOR_LINGER_S,
            )
            for handle in self._executors
        ]
        self._spawn(self._consume_timer())
        for index in range(len(self._executors)):
            self._spawn(self._consume_results(index))
        self._spawn(self._checkpoint_loop())
        self._spawn(self._retention_loop())
        enabled = [s.automation for s in self.store.automations.list(enabled=True)]
        self.progress.begin_recovery(len(enabled))
        if self._recovery_gate is not None:
            await self._recovery_gate.wait()
        await asyncio.gather(*(self._recover(a) for a in enabled))
        await asyncio.gather(*(e.ping.remote() for e in self._executors))
        self.metrics.automations.set(len(self._automations))
        log.info("service started", extra={"automations": len(enabled)})

    async def _recover(self, automation: Automation) -> None:
        await self._place(automation, recover=True)
        self.progress.recovered_one()

    async def checkpoint(self, timeout_s: float = 30.0) -> int:
        """Checkpoint every automation actor now; returns how many automations were saved."""
        # Each call is submitted with the actor's safe sequence number, before
        # anything else is routed: idle automations' checkpoints move on too.
        calls = [
            p.handle.checkpoint.remote(self.router.sent_upto(key))
            for key, p in self._actors.items()
        ]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout_s)
        saved = 0
        for result in results:
            if isinstance(result, BaseException):
                self.metrics.actor_call_failures.labels("checkpoint").inc()
                log.error("checkpoint failed: %s", result)
            else:
                saved += int(result)
        return saved

    async def maintain(self) -> dict[str, Any]:
        """Checkpoint every actor, trim the event log past its retention, and fold the
        write-ahead log into the database (``marmot admin checkpoint``)."""
        saved = await self.checkpoint()
        trimmed = await self.trim_events()
        pages, copied = await asyncio.to_thread(self.store.db.wal_checkpoint)
        return {
            "automations_checkpointed": saved,
            "events_trimmed": trimmed,
            "wal_pages": pages,
            "wal_pages_copied": copied,
        }

    async def trim_events(self) -> int:
        """Delete events older than the retention that no checkpoint's replay needs."""
        keep_after = self.store.checkpoints.oldest_seq()
        if keep_after is None:
            keep_after = self.store.events.last_seq()
        older_than = from_us(self._clock_us()) - timedelta(days=self.settings.retention_days)
        trimmed = await asyncio.to_thread(
            self.store.events.trim, keep_after_seq=keep_after, older_than=older_than
        )
        if trimmed:
            self.metrics.events_trimmed.inc(trimmed)
            log.info("event log trimmed", extra={"events": trimmed, "kept_after_seq": keep_after})
        return trimmed

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retention_check_s)
            try:
                await self.trim_events()
            except Exception:
                log.exception("event log retention failed")

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval_s)
            try:
                await self.checkpoint()
            except Exception:
                log.exception("periodic checkpoint failed")

    async def stop(self) -> None:
        """Checkpoint, then stop every actor this service created."""
        await self.router.close()
        if self._actors:
            with contextlib.suppress(Exception):
                await self.checkpoint()
        await asyncio.gather(*(lane.close() for lane in self._executor_lanes))
        self._executor_lanes = []
        if self._timer_lane is not None:
            await self._timer_lane.close()
            self._timer_lane = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for placement in self._actors.values():
            self.runtime.kill(placement.handle)
        for handle in [*self._executors, self._timer]:
            if handle is not None:
                self.runtime.kill(handle)
        self._actors.clear()
        self._executors = []
        self._timer = None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- placement ----------------------------------------------------------------------

    def _actor_key_for(self, automation_id: str) -> str:
        per_actor = self.settings.automations_per_actor
        if per_actor == 1:
            return f"automation-{automation_id}"
        for key, placement in self._actors.items():
            if len(placement.automations) < per_actor:
                return key
        return f"shard-{next(i for i in itertools.count() if f'shard-{i}' not in self._actors)}"

    async def _place(self, automation: Automation, *, recover: bool = False) -> None:
        """Host an automation in an actor: fresh, or (``recover``) from its checkpoint."""
        automation_id = str(automation.id)
        if automation.actions_on_resolve and not self.settings.resolved_states:
            log.warning(
                "automation %r has actions_on_resolve, which run only with resolved_states "
                "on (as in Prefect's server, it never resolves)",
                automation.name,
                extra={"automation": automation_id},
            )
        key = self._actor_of.get(automation_id) or self._actor_key_for(automation_id)
        placement = self._actors.get(key)
        if placement is None:
            placement = self._actors[key] = _Placement(
                self.runtime.automation_actor(
                    key, self._store_factory, self.settings.resolved_states
                )
            )
            self.router.add_actor(key, placement.handle)
        placement.automations.add(automation_id)
        document = automation.model_dump_json()
        self._automations[automation_id] = automation
        self._documents[automation_id] = document
        self._actor_of[automation_id] = key
        # Submitted before the route exists, so the actor loads before it
        # applies any event routed to it.
        ref = (
            placement.handle.recover.remote(document, self._clock_us())
            if recover
            else placement.handle.load.remote(document)
        )
        matchers = Evaluator(automation).matchers
        self.router.route(automation_id, key, matchers)
        if recover:
            await self._recovered(Outcome.unpack(await ref))
        else:
            self._schedule_soon({automation_id: await ref})

    async def _recovered(self, outcome: Outcome) -> None:
        """Act on what replaying the log produced, except what was dispatched before.

        A replayed firing whose triggered event is not in the log is dispatched
        in full; one whose event is logged but whose actions were never claimed
        (the daemon died in between) gets its actions only.
        """
        fresh: list[Firing] = []
        unclaimed: list[Firing] = []
        if outcome.firings:
            pairs = [
                (firing, triggered_event(self._automations[str(firing.automation_id)], firing).id)
                for firing in outcome.firings
                if str(firing.automation_id) in self._automations
            ]
            known = self.store.events.known_ids([event_id for _, event_id in pairs])
            fresh = [firing for firing, event_id in pairs if event_id not in known]
            logged = [
                firing
                for firing, event_id in pairs
                if event_id in known and self._has_actions(firing)
            ]
            claimed = self.store.actions.claimed_keys([firing_key(f.id, 0) for f in logged])
            unclaimed = [f for f in logged if firing_key(f.id, 0) not in claimed]
            self.metrics.recovered_firings.inc(len(fresh) + len(unclaimed))
        await self._on_outcome(dataclasses.replace(outcome, firings=fresh))
        if unclaimed:
            await self._dispatch(unclaimed, announce=False)

    def _has_actions(self, firing: Firing) -> bool:
        automation = self._automations[str(firing.automation_id)]
        if firing.state is TriggerState.Resolved:
            return bool(automation.actions_on_resolve)
        return bool(automation.actions or automation.actions_on_trigger)

    async def _unplace(self, automation_id: str) -> None:
        key = self._actor_of.pop(automation_id, None)
        self.router.unroute(automation_id)
        self._automations.pop(automation_id, None)
        self._documents.pop(automation_id, None)
        self._schedule_soon({automation_id: None})
        if key is None:
            return
        placement = self._actors[key]
        placement.automations.discard(automation_id)
        if placement.automations:
            await placement.handle.unload.remote(automation_id)
            return
        del self._actors[key]
        self.router.remove_actor(key)
        self.runtime.kill(placement.handle)

    def _schedule(self, handle: Any, items: list[tuple[str, int | None]]) -> Any:
        # The offset goes with every schedule: the timer may not have heard it
        # for a long time (it is pushed only while deadlines are pending).
        offset = self.router.offset_us()
        self._last_offset = offset
        return handle.schedule.remote(dict(items), offset)

    def _schedule_soon(self, deadlines: dict[str, int | None]) -> None:
        """Queue deadline changes; they reach the timer in order, coalesced into
        one call per round trip (a call per batch would cost Ray calls)."""
        if self._timer_lane is not None:
            self._timer_lane.put(self._deadlines.changed(deadlines).items())

    # -- automations --------------------------------------------------------------------

    async def create(self, automation: Automation) -> StoredAutomation:
        """Store a new automation and, if enabled, start evaluating it."""
        async with self._lock:
            if automation.enabled:
                self._check_room(str(automation.id))
            stored = self.store.automations.create(automation)
            if automation.enabled:
                await self._place(stored.automation)
            self.metrics.automations.set(len(self._automations))
            return stored

    def _check_room(self, automation_id: str) -> None:
        if (
            automation_id not in self._automations
            and len(self._automations) >= self.settings.max_automations
        ):
            raise LimitExceeded(
                f"this daemon runs at most {self.settings.max_automations} automations "
                "(limits: max_automations)"
            )

    async def update(self, automation: Automation) -> StoredAutomation:
        """Replace an automation; its state resets (SEMANTICS §5)."""
        async with self._lock:
            if automation.enabled:
                self._check_room(str(automation.id))
            stored = self.store.automations.update(automation)
            automation_id = str(automation.id)
            if stored.automation.enabled:
                await self._place(stored.automation)
            elif automation_id in self._automations:
                await self._unplace(automation_id)
            self.metrics.automations.set(len(self._automations))
            return stored

    async def set_enabled(self, automation_id: UUID, enabled: bool) -> StoredAutomation:
        """Pause (stop evaluating, forget state) or resume an automation."""
        async with self._lock:
            if enabled:
                self._check_room(str(automation_id))
            stored = self.store.automations.set_enabled(automation_id, enabled)
            key = str(automation_id)
            if enabled and key not in self._automations:
                await self._place(stored.automation)
            elif not enabled and key in self._automations:
                await self._unplace(key)
            if not enabled:
                self.store.checkpoints.delete(key)
            self.metrics.automations.set(len(self._automations))
            return stored

    async def delete(self, automation_id: UUID) -> None:
        """Delete an automation and stop evaluating it."""
        async with self._lock:
            self.store.automations.delete(automation_id)
            if str(automation_id) in self._automations:
                await self._unplace(str(automation_id))
            self.store.checkpoints.delete(str(automation_id))
            self.metrics.automations.set(len(self._automations))

    async def explain(self, automation_id: UUID) -> dict[str, Any]:
        """The live state of an automation's triggers."""
        stored = self.store.automations.read(automation_id)
        key = self._actor_of.get(str(automation_id))
        if key is None:
            return {
                "automation_id": str(automation_id),
                "name": stored.automation.name,
                "enabled": stored.automation.enabled,
                "triggers": [],
                "next_deadline": None,
                "open_buckets": 0,
            }
        await self.router.drain([key])  # so the answer includes events already accepted
        found = await self._actors[key].handle.explain.remote(str(automation_id))
        if found is None:
            raise NotFound(f"automation {automation_id} is not loaded")
        return dict(found)

    # -- events -----------------------------------------------------------------------

    async def emit(self, events: Sequence[Event], source: str = "rpc") -> list[int]:
        """Accept validated events; returns their sequence numbers once logged."""
        seqs = await self.router.submit(events, backpressure=source != "automation")
        self.metrics.events_received.labels(source).inc(len(events))
        pusher = self._offset_pusher
        if self._deadlines.timed and (pusher is None or pusher.done()) and self._offset_moved():
            self._offset_pusher = self._spawn(self._push_offset())
        return seqs

    def _offset_moved(self) -> bool:
        last = self._last_offset
        return last is None or abs(self.router.offset_us() - last) >= OFFSET_SLACK_US

    async def _push_offset(self) -> None:
        # Live events move the offset by a few milliseconds with every one: the
        # timer hears of it at most every OFFSET_PUSH_INTERVAL_S, and only when
        # it moved by OFFSET_SLACK_US or more (a call per event would cost the
        # timer and the daemon more than the events). A stale offset makes a
        # timer wake early (the actor finds nothing due and says when) or late
        # by at most the slack plus the interval. With no deadline pending, the
        # timer is not told at all (the next schedule call carries the offset).
        while self._timer is not None and self._deadlines.timed and self._offset_moved():
            offset = self.router.offset_us()
            self._last_offset = offset
            self._timer.set_offset.remote(offset)
            await asyncio.sleep(OFFSET_PUSH_INTERVAL_S)

    async def _on_outcome(self, outcome: Outcome) -> None:
        self.metrics.evaluations.inc(outcome.evaluated)
        if outcome.deadlines:
            self._schedule_soon(outcome.deadlines)
        if outcome.firings:
            await self._dispatch(outcome.firings)

    def _reload(self, automation_ids: Sequence[str]) -> None:
        """Put automations back into an actor that Ray restarted empty.

        The recover calls are submitted at once, so they reach the actor
        before anything sent after them; each restores its checkpoint and
        replays the log since.
        """
        for automation_id in automation_ids:
            key = self._actor_of.get(automation_id)
            document = self._documents.get(automation_id)
            if key is None or document is None or key not in self._actors:
                continue
            self.metrics.actor_call_failures.labels("actor_restarted").inc()
            log.warning("automation actor restarted; recovering", extra={"actor": key})
            ref = self._actors[key].handle.recover.remote(document, self._clock_us())
            self._spawn(self._recover_later(ref))

    async def _recover_later(self, ref: Any) -> None:
        try:
            outcome = Outcome.unpack(await ref)
        except Exception:  # the next call to the actor finds it empty and tries again
            self.metrics.actor_call_failures.labels("recover").inc()
            log.exception("recovering an automation actor failed")
            return
        await self._recovered(outcome)

    async def _dispatch(self, firings: Sequence[Firing], *, announce: bool = True) -> None:
        """Emit each firing's automation.triggered event (unless ``announce`` is off:
        it is logged already), then queue its actions.

        A Proactive or metric firing evaluated over ``LATE_AFTER_US`` after its deadline
        (it passed while the daemon or its timer was down) says so in its
        triggered event's payload (``late_by_seconds``), for the actions and
        their templates.
        """
        events_now = self._clock_us() + self.router.offset_us()
        jobs: list[_Job] = []
        triggered: list[Event] = []
        for firing in firings:
            automation_id = str(firing.automation_id)
            automation = self._automations.get(automation_id)
            if automation is None:
                continue  # deleted or paused while the firing was in flight
            if firing.state is TriggerState.Triggered:
                self.firings_total += 1
                self.metrics.firings.labels(automation.name).inc()
            else:
                self.metrics.resolutions.labels(automation.name).inc()
            event = triggered_event(automation, firing)
            late = 0 if firing.deadline_us is None else events_now - firing.deadline_us
            if late > LATE_AFTER_US:
                event = _marked_late(event, late)
                self.metrics.late_firings.inc()
                log.warning(
                    "late firing: the deadline passed %.1f s before it could be evaluated",
                    late / 1e6,
                    extra={"automation": automation_id, "firing": str(firing.id)},
                )
            triggered.append(event)
            jobs.append((automation_id, firing_to_wire(firing), event_to_wire(event)))
        if not jobs:
            return
        if announce:
            await self.emit(triggered, source="automation")
        if self._executor_lanes:
            # As few executors as keep up: on a small machine every process
            # woken costs scheduling delay, and firings queued behind a call in
            # flight go together in the next one.
            first_idle(self._executor_lanes).put(jobs)

    def _execute(self, handle: Any, jobs: list[_Job]) -> Any:
        documents = {job[0]: self._documents[job[0]] for job in jobs if job[0] in self._documents}
        runnable = [job for job in jobs if job[0] in documents]
        return handle.execute.remote(pack([documents, runnable]))

    async def _actions_done(self, lane: Lane[_Job], jobs: list[_Job], blob: bytes) -> None:
        # The action.triggered events of the actions the executor started.
        await self.emit(action_events_from_blob(blob), source="automation")

    async def _consume_results(self, index: int) -> None:
        """Read one executor's stream of finished actions, for as long as the service runs.

        A restarted executor breaks the stream; it is read again once the
        executor answers, and the executor adopts the actions its last
        incarnation claimed and did not finish (on the first read: those the
        last run of the daemon left). The action log keeps a re-delivered
        firing from acting twice.
        """
        while True:
            handle = self._executors[index] if index < len(self._executors) else None
            if handle is None:
                return
            try:
                stream = handle.results.options(
                    num_returns="streaming", max_task_retries=0
                ).remote()
                adopted: int = await handle.adopt.remote()
                self.metrics.adopted_actions.inc(adopted)
                async for ref in stream:
                    await self._actions_finished(ExecutorResults.unpack(await ref))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.actor_call_failures.labels("executor").inc()
                log.error("executor stream failed: %s", exc)
                await asyncio.sleep(0.5)

    async def _actions_finished(self, results: ExecutorResults) -> None:
        for event in results.events:
            status = event.event.rsplit(".", 1)[-1]
            self.metrics.actions.labels(str(event.payload.get("action_type")), status).inc()
        for request in results.registry:
            await self._apply_registry(request)
        await self.emit(results.events, source="automation")

    async def _apply_registry(self, request: RegistryRequest) -> None:
        """A pause-automation / resume-automation action's change, made as the RPC would."""
        try:
            await self.set_enabled(UUID(request.automation_id), request.op == "resume")
        except Exception:
            log.exception(
                "could not %s automation %s for an action", request.op, request.automation_id
            )

    def _timer_failed(self, lane: Lane[Any], batch: list[Any], exc: BaseException) -> bool:
        # A restarted timer is given every deadline again (_consume_timer).
        self.metrics.actor_call_failures.labels("timer").inc()
        log.error("timer call failed: %s", exc)
        return False

    def _executor_failed(self, lane: Lane[_Job], jobs: list[_Job], exc: BaseException) -> bool:
        # An executor that died with the batch is restarted by Ray: the batch goes
        # to it again (what the dead one claimed, the new one adopts; the action
        # log makes the rest act once).
        self.metrics.actor_call_failures.labels("executor").inc()
        log.error("executor call failed: %s", exc, extra={"firings": len(jobs)})
        return isinstance(exc, RayActorError)

    async def _consume_timer(self) -> None:
        """Read the timer's stream of due deadlines, for as long as the service runs.

        A restarted timer (it died; Ray brought it back empty) breaks the
        stream: it is given the events clock's offset and every deadline the
        service knows again, then read anew.
        """
        restarted = False
        while True:
            try:
                if restarted:
                    if self._last_offset is not None:
                        self._timer.set_offset.remote(self._last_offset)
                    if self._timer_lane is not None:
                        self._timer_lane.put(self._deadlines.pending())
                stream = self._timer.stream.options(
                    num_returns="streaming", max_task_retries=0
                ).remote()
                async for ref in stream:
                    self._due(await ref)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.actor_call_failures.labels("timer").inc()
                log.error("timer stream failed; giving a restarted timer its deadlines: %s", exc)
                restarted = True
                await asyncio.sleep(0.5)

    def _due(self, due: list[tuple[str, int, int]]) -> None:
        now = self._clock_us()
        by_actor: dict[str, list[str]] = {}
        as_of = now
        for automation_id, due_as_of, lateness in due:
            late_s = max(lateness, 0) / 1e6
            self.metrics.timer_lateness.observe(late_s)
            self.lateness.append(late_s)
            key = self._actor_of.get(automation_id)
            if key is not None:
                by_actor.setdefault(key, []).append(automation_id)
                as_of = due_as_of
        for key, automation_ids in by_actor.items():
            placement = self._actors.get(key)
            if placement is not None:
                self._spawn(self._expire(placement.handle, as_of, now, automation_ids))

    async def _expire(self, handle: Any, as_of: int, now: int, automation_ids: list[str]) -> None:
        try:
            outcome = Outcome.unpack(await handle.expire.remote(as_of, now, automation_ids))
        except Exception:
            self.metrics.actor_call_failures.labels("expire").inc()
            log.exception("proactive evaluation failed", extra={"automations": automation_ids})
            return
        if outcome.missing:
            self._reload(outcome.missing)
        await self._on_outcome(outcome)

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts, queue depths and the node's remaining capacity."""
        actors = len(self._actors)
        capacity = self.runtime.capacity(actors + len(self._executors) + 1)
        per_actor = self.settings.automations_per_actor
        capacity["automations_free"] = min(
            capacity["actors_free"] * per_actor,
            self.settings.max_automations - len(self._automations),
        )
        return {
            "automations_loaded": len(self._automations),
            "automation_actors": actors,
            "automations_per_actor": per_actor,
            "executors": len(self._executors),
            "events_received": self.router.stats.received,
            "events_routed": self.router.stats.routed,
            "queued_events": self.router.queued,
            "held_followers": self.router.causal.waiting,
            "firings": self.firings_total,
            "events_clock_offset_s": self.router.offset_us() / 1e6,
            "timer_lateness_ms": _percentiles(self.lateness),
            "capacity": capacity,
        }


def _percentiles(samples: deque[float]) -> dict[str, float] | None:
    """p50 / p99 / max of recent samples, in milliseconds."""
    if not samples:
        return None
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": pick(0.50), "p99": pick(0.99), "max": ordered[-1] * 1000}


def _marked_late(event: Event, late_us: int) -> Event:
    payload = {**event.payload, "late_by_seconds": round(late_us / 1e6, 3)}
    return event.model_copy(update={"payload": payload})


async def _ignore_result(lane: Any, batch: Any, result: Any) -> None:
    """For calls whose result carries nothing (the timer's ``schedule``)."""
