"""Firings to the executor pool, and what the executors report back.

``Dispatcher`` announces each firing (its ``automation.triggered`` event),
queues its actions on the least busy executor, emits the ``action.*``
events the executors report, and hands pause/resume-automation requests to
``on_registry``. After a recovery it tells firings never dispatched from
those whose actions were never claimed (``split_recovered``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from ray.exceptions import RayActorError

from marmot.actors.action_runs import RegistryRequest, RunnerFactory
from marmot.actors.executor import ExecutorResults, firing_key
from marmot.actors.lanes import Lane, first_idle
from marmot.actors.metrics import Metrics
from marmot.actors.runtime import ExecutorRef, RayRuntime, Reply
from marmot.actors.store import Store
from marmot.actors.tasks import TaskGroup
from marmot.actors.throttle import LogThrottle
from marmot.actors.wire import Outcome, event_to_wire, firing_to_wire, pack
from marmot.config import MarmotConfig
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.triggers.firing import Firing, TriggerState, triggered_event

log = logging.getLogger(__name__)

__all__ = ["Dispatcher"]

# A proactive evaluation this long after its deadline (timer lateness is tens
# of milliseconds) ran because the daemon or its timer was down: its firing is
# marked late.
LATE_AFTER_US = 1_000_000

# Firings go to an executor at once when one is idle, and queue behind its
# call in flight otherwise (up to this many per call): bursts still go in few
# calls, and a lone firing does not wait for company. (A 20 ms linger used to
# batch them: a firing's action started ~20 ms late, p50 ~31 ms to delivered.)
EXECUTOR_BATCH_MAX = 200

# The least time between the starts of two calls to one executor. An executor
# call returns once its actions are claimed (a millisecond or two), so on an
# unloaded machine a steady flow of firings can go one per call: each call is a
# Ray round trip and a write transaction in the action log, on the database
# the daemon's event log appends to (SQLite has one writer). Paced, a lane
# makes at most ~200 calls/s and a firing waits at most this long; one after a
# quiet spell waits not at all.
EXECUTOR_MIN_GAP_S = 0.005

# (automation id, firing, automation.triggered event) in wire form.
_Job = tuple[str, list[Any], list[Any]]

# Logs the daemon's own events; the flag says whether the call may wait for
# backpressure (not while an automation actor's results are being handled).
Emit = Callable[[Sequence[Event], bool], Awaitable[Any]]


class Dispatcher:
    """The executor pool: firings in, action events and registry requests out."""

    def __init__(
        self,
        runtime: RayRuntime,
        store: Store,
        config: MarmotConfig,
        runner_factory: RunnerFactory | None,
        *,
        automation: Callable[[str], Automation | None],
        document: Callable[[str], str | None],
        emit: Emit,
        on_registry: Callable[[RegistryRequest], Awaitable[None]],
        metrics: Metrics,
        tasks: TaskGroup,
    ) -> None:
        """``automation`` / ``document`` look a hosted automation up (None: it was
        deleted or paused while its firing was in flight); ``emit`` logs events as
        the daemon's own."""
        self._runtime = runtime
        self._store = store
        self._config = config
        self._runner_factory = runner_factory
        self._automation = automation
        self._document = document
        self._emit = emit
        self._on_registry = on_registry
        self._metrics = metrics
        self._tasks = tasks
        self.executors: list[ExecutorRef] = []
        self._lanes: list[Lane[_Job]] = []
        self.firings_total = 0
        self._fired_lines = LogThrottle()
        self._late_lines = LogThrottle()

    def _log_firing(self, automation: Automation, firing: Firing) -> None:
        """One INFO line per firing (or resolution), naming the automation, its key
        and the triggering event; at most one per automation every few seconds,
        saying how many it left out."""
        skipped = self._fired_lines.admit(str(firing.automation_id))
        if skipped is None:
            return
        verb = "fired" if firing.state is TriggerState.Triggered else "resolved"
        key = ", ".join(f"{k}={v}" for k, v in firing.labels.items()) or "-"
        cause = firing.triggering_event
        on = f" on {cause.event} ({cause.id})" if cause is not None else " (no event came)"
        more = f"; {skipped} more since the last line" if skipped else ""
        log.info(
            "automation %r %s for %s%s%s",
            automation.name,
            verb,
            key,
            on,
            more,
            extra={"automation": str(firing.automation_id), "firing": str(firing.id)},
        )

    def _log_late(self, late_ones: list[tuple[int, str]]) -> None:
        """One WARNING for the late firings of a dispatch, at most one every few seconds
        (saying how many it left out): a fleet restarted after a while has thousands
        of proactive windows that ended meanwhile, and each is counted in
        ``marmot_late_firings_total`` and marked in its triggered event."""
        skipped = self._late_lines.admit("late")
        if skipped is None:
            return
        latest, name = max(late_ones)
        more = f"; {skipped} more since the last line" if skipped else ""
        log.warning(
            "%d late firing(s): deadlines passed up to %.1f s (automation %r) before they "
            "could be evaluated, while the daemon or its timer was down or behind%s",
            len(late_ones),
            latest / 1e6,
            name,
            more,
        )

    @property
    def queued(self) -> int:
        """Firings waiting for an executor."""
        return sum(lane.queued for lane in self._lanes)

    def start(self) -> None:
        """Create the executors (each adopts what its name left unfinished) and read
        their results."""
        names = [f"executor-{i}" for i in range(self._config.executors.pool_size)]
        # No executor of the last run is alive: its unfinished claims go to this pool.
        orphans = self._store.actions.orphan_claims(names)
        if orphans:
            log.warning("%d action(s) left unfinished by the last run will be carried out", orphans)
        log_factory = partial(Store.open, self._store.path)
        self.executors = [
            self._runtime.executor_actor(
                name, log_factory, self._config, self._runner_factory, name
            )
            for name in names
        ]
        self._lanes = [
            Lane(
                executor,
                self._execute,
                self._actions_done,
                self._executor_failed,
                batch_max=EXECUTOR_BATCH_MAX,
                max_inflight=1,
                min_gap_s=EXECUTOR_MIN_GAP_S,
            )
            for executor in self.executors
        ]
        for index in range(len(self.executors)):
            self._tasks.spawn(self._consume_results(index))

    async def ready(self) -> None:
        """Return once every executor answers."""
        await asyncio.gather(*(executor.ping() for executor in self.executors))

    async def stop(self) -> None:
        """Stop sending; the caller kills the executors (``executors``)."""
        await asyncio.gather(*(lane.close() for lane in self._lanes))
        self._lanes = []

    def split_recovered(self, outcome: Outcome) -> tuple[list[Firing], list[Firing]]:
        """The firings a recovery replayed that were never dispatched (their
        triggered event is not logged), and those dispatched whose actions were
        never claimed (the daemon died in between); the rest acted already."""
        pairs = []
        for firing in outcome.firings:
            automation = self._automation(str(firing.automation_id))
            if automation is not None:
                pairs.append((firing, triggered_event(automation, firing).id))
        known = self._store.events.known_ids([event_id for _, event_id in pairs])
        fresh = [firing for firing, event_id in pairs if event_id not in known]
        logged = [f for f, event_id in pairs if event_id in known and self._has_actions(f)]
        claimed = self._store.actions.claimed_keys([firing_key(f.id, 0) for f in logged])
        unclaimed = [f for f in logged if firing_key(f.id, 0) not in claimed]
        self._metrics.recovered_firings.inc(len(fresh) + len(unclaimed))
        return fresh, unclaimed

    def _has_actions(self, firing: Firing) -> bool:
        automation = self._automation(str(firing.automation_id))
        if automation is None:
            return False
        if firing.state is TriggerState.Resolved:
            return bool(automation.actions_on_resolve)
        return bool(automation.actions or automation.actions_on_trigger)

    async def dispatch(self, firings: Sequence[Firing], *, announce: bool = True) -> None:
        """Emit each firing's automation.triggered event (unless ``announce`` is off:
        it is logged already), then queue its actions.

        A Proactive or metric firing evaluated over ``LATE_AFTER_US`` after its deadline
        (it passed while the daemon or its timer was down) says so in its
        triggered event's payload (``late_by_seconds``), for the actions and
        their templates.
        """
        jobs: list[_Job] = []
        triggered: list[Event] = []
        late_ones: list[tuple[int, str]] = []
        for firing in firings:
            automation_id = str(firing.automation_id)
            automation = self._automation(automation_id)
            if automation is None:
                continue  # deleted or paused while the firing was in flight
            if firing.state is TriggerState.Triggered:
                self.firings_total += 1
                self._metrics.firings.labels(automation.name).inc()
            else:
                self._metrics.resolutions.labels(automation.name).inc()
            event = triggered_event(automation, firing)
            self._log_firing(automation, firing)
            late = _lateness_us(firing)
            if late > LATE_AFTER_US:
                event = _marked_late(event, late)
                self._metrics.late_firings.inc()
                late_ones.append((late, automation.name))
            triggered.append(event)
            jobs.append((automation_id, firing_to_wire(firing), event_to_wire(event)))
        if late_ones:
            self._log_late(late_ones)
        if not jobs:
            return
        if announce:
            # Called while an automation actor's outcome is handled: waiting here for
            # the router's queue would stall the lane that drains it. A runaway loop
            # is stopped by the loop guard instead (actors/loops.py).
            await self._emit(triggered, False)
        if self._lanes:
            # As few executors as keep up: on a small machine every process
            # woken costs scheduling delay, and firings queued behind a call in
            # flight go together in the next one.
            first_idle(self._lanes).put(jobs)

    def _execute(self, executor: ExecutorRef, jobs: list[_Job]) -> Reply[bytes]:
        documents: dict[str, str] = {}
        for automation_id, _, _ in jobs:
            document = self._document(automation_id)
            if document is not None:
                documents[automation_id] = document
        runnable = [job for job in jobs if job[0] in documents]
        return executor.execute(pack([documents, runnable]))

    async def _actions_done(self, lane: Lane[_Job], jobs: list[_Job], started: bytes) -> None:
        # Their action.triggered events come with the results, ahead of each outcome.
        return None

    async def _consume_results(self, index: int) -> None:
        """Read one executor's stream of finished actions, for as long as the daemon runs.

        A restarted executor breaks the stream; it is read again once the
        executor answers, and the executor adopts the actions its last
        incarnation claimed and did not finish (on the first read: those the
        last run of the daemon left). The action log keeps a re-delivered
        firing from acting twice.
        """
        while index < len(self.executors):
            executor = self.executors[index]
            try:
                results = executor.results()
                adopted = await executor.adopt()
                self._metrics.adopted_actions.inc(adopted)
                async for finished in results:
                    await self._actions_finished(finished)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.actor_call_failures.labels("executor").inc()
                log.error("executor stream failed: %s", exc)
                await asyncio.sleep(0.5)

    async def _actions_finished(self, results: ExecutorResults) -> None:
        for event in results.events:
            status = event.event.rsplit(".", 1)[-1]
            self._metrics.actions.labels(str(event.payload.get("action_type")), status).inc()
        for request in results.registry:
            await self._on_registry(request)
        await self._emit(results.events, True)

    def _executor_failed(self, lane: Lane[_Job], jobs: list[_Job], exc: BaseException) -> bool:
        # An executor that died with the batch is restarted by Ray: the batch goes
        # to it again (what the dead one claimed, the new one adopts; the action
        # log makes the rest act once).
        self._metrics.actor_call_failures.labels("executor").inc()
        log.error("executor call failed: %s", exc, extra={"firings": len(jobs)})
        return isinstance(exc, RayActorError)


def _lateness_us(firing: Firing) -> int:
    """How long after its deadline a firing was evaluated, on the events clock (0 for
    one without a deadline): measured where it was evaluated, so later moves of the
    events clock's offset do not change it."""
    if firing.deadline_us is None or firing.evaluated_us is None:
        return 0
    return max(firing.evaluated_us - firing.deadline_us, 0)


def _marked_late(event: Event, late_us: int) -> Event:
    payload = {**event.payload, "late_by_seconds": round(late_us / 1e6, 3)}
    return event.model_copy(update={"payload": payload})
