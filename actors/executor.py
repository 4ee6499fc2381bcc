"""The body of an action-executor actor: carries out a firing's actions, once.

Each action gets an idempotency key (firing id + action index) that is
claimed in the action log before it runs, so a firing delivered twice acts
once. ``execute`` claims a batch, starts its actions and returns at once with
their ``prefect.automation.action.triggered`` events; each action then runs
on its own (bounded concurrency, a time-out per attempt, retries with
exponential backoff and jitter on transient failures), and its
``.executed`` or ``.failed`` event, with any change to the automation
registry it asks for, comes out of ``results``, a stream the daemon reads
and feeds back into the event stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, partial
from typing import Any, TypeVar
from uuid import UUID, uuid4

from marmot.actors.action_runs import (
    ActionFailed,
    ActionResult,
    ActionRun,
    RegistryRequest,
    Runner,
    RunnerFactory,
    RunnerSet,
    TransientFailure,
)
from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.priority import lower_priority
from marmot.actors.store import Store
from marmot.actors.throttle import LogThrottle
from marmot.actors.wire import event_from_wire, event_to_wire, firing_from_wire, pack, unpack
from marmot.config import ExecutorsConfig, MarmotConfig
from marmot.engine.clock import Clock
from marmot.engine.errors import MarmotError
from marmot.engine.models.actions import Action
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import (
    RESOURCE_ID,
    RESOURCE_NAME,
    RESOURCE_ROLE,
    Event,
    trusted_event,
)
from marmot.engine.triggers.firing import FIRING_NAMESPACE, TriggerState, name_uuid

log = logging.getLogger(__name__)

__all__ = [
    "ExecutorHost",
    "ExecutorResults",
    "backoff_delay",
    "firing_key",
    "run_do_nothing",
]


async def run_do_nothing(run: ActionRun) -> ActionResult:
    """``do-nothing``: succeeds without side effects."""
    return ActionResult("did nothing, as asked")


def backoff_delay(attempt: int, settings: ExecutorsConfig, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): doubling, capped, full jitter
    in its upper half so retries of many actions do not arrive together."""
    ceiling: float = min(settings.backoff_max_s, settings.backoff_base_s * 2.0 ** (attempt - 1))
    return ceiling * rng.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class ExecutorResults:
    """One chunk of the ``results`` stream: action events and registry requests."""

    events: list[Event]
    registry: list[RegistryRequest]

    def pack(self) -> bytes:
        return pack(
            [
                [event_to_wire(e) for e in self.events],
                [[r.op, r.automation_id] for r in self.registry],
            ]
        )

    @classmethod
    def unpack(cls, blob: bytes) -> ExecutorResults:
        events, registry = unpack(blob)
        return cls(
            [event_from_wire(row) for row in events],
            [RegistryRequest(op, automation_id) for op, automation_id in registry],
        )


@dataclass(frozen=True, slots=True)
class _Finished:
    """An action's outcome; or, with ``status`` None, its ``action.triggered``
    announcement, queued before the action starts so the two go out in order."""

    key: str
    status: str | None
    detail: str
    event: Event
    registry: RegistryRequest | None


@dataclass(frozen=True, slots=True)
class _Planned:
    run: ActionRun
    triggered: Event
    job: bytes  # what the action log keeps to carry the action out again


class ExecutorHost:
    """Runs the actions of firings against the action log."""

    def __init__(
        self,
        log_factory: Callable[[], Store],
        config: MarmotConfig | None = None,
        runner_factory: RunnerFactory | None = None,
        name: str = "executor",
        *,
        sleep: Callable[[float], Any] = asyncio.sleep,
        seed: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        # Claims are held by this incarnation; the next one (Ray restarted the
        # actor) adopts those left unfinished.
        self.owner = f"{name}#{uuid4().hex}"
        self._store: Store = log_factory()
        self._actions = self._store.actions
        self._clock = clock
        self._config = config or MarmotConfig()
        self._settings = self._config.executors
        lower_priority(self._settings.nice)
        self._runner_factory = runner_factory
        self._runner_set: RunnerSet | None = None
        self._building: asyncio.Lock | None = None
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._done: asyncio.Queue[_Finished] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = LogThrottle(clock=clock)

    def ping(self) -> bool:
        """Liveness check."""
        return True

    async def _runners(self) -> Mapping[str, Runner]:
        if self._runner_set is None:
            if self._building is None:
                self._building = asyncio.Lock()
            async with self._building:
                if self._runner_set is None:
                    built = (
                        await self._runner_factory(self._config, self._store)
                        if self._runner_factory is not None
                        else RunnerSet({})
                    )
                    self._runner_set = RunnerSet(
                        {"do-nothing": run_do_nothing, **built.runners}, built.close
                    )
        return self._runner_set.runners

    def _queue(self) -> asyncio.Queue[_Finished]:
        if self._done is None:
            self._done = asyncio.Queue()
            self._slots = asyncio.Semaphore(self._settings.max_concurrent_actions)
        return self._done

    async def execute(self, blob: bytes) -> bytes:
        """Claim and start the actions of a batch of firings; returns how many started
        (packed). Their ``action.triggered`` events come out of :meth:`results`,
        each ahead of the action's outcome, so the log has them in that order.

        The blob is ``[{automation id: automation JSON}, [[automation id, firing,
        automation.triggered event], ...]]``. Every action is claimed in the
        action log before it starts (one transaction for the batch), so a firing
        delivered twice acts once. Outcomes come out of :meth:`results`.
        """
        planned = _plan(blob)
        runners = await self._runners()  # before claiming: a failure here acts on nothing
        claimed = await _in_store(
            len(planned),
            partial(
                self._actions.claim_many,
                [
                    (p.run.key, str(p.run.firing.id), str(p.run.automation.id), p.run.index)
                    for p in planned
                ],
                jobs={str(p.run.firing.id): p.job for p in planned},
                owner=self.owner,
            ),
        )
        started = 0
        done = self._queue()
        for p in planned:
            if p.run.key not in claimed:
                continue  # delivered before: act once
            announced = _action_event("triggered", p.run, p.triggered, self._clock.now())
            done.put_nowait(_Finished(p.run.key, None, "", announced, None))
            self._start(p, runners)
            started += 1
        return pack(started)

    async def adopt(self) -> int:
        """Carry out the actions an earlier incarnation of this executor claimed and
        did not finish (it died, or the daemon did); returns how many.

        An action whose executor died during an attempt may have had its effect
        already: adopting it runs it again (at least once). Its
        ``action.triggered`` event went out before, so only its outcome does now.
        """
        runners = await self._runners()
        adopted = await asyncio.to_thread(self._actions.adopt_claims, self.owner)
        unreadable: list[tuple[str, str, str]] = []
        for key, index, job in adopted:
            try:
                planned = _plan_job(job)[index]
            except Exception as exc:  # a job this version cannot read: fail it, visibly
                log.exception("cannot carry out adopted action %s", key)
                unreadable.append((key, "failed", f"its job could not be read: {exc}"))
                continue
            self._start(planned, runners)
        await asyncio.to_thread(self._actions.finish_many, unreadable)
        if adopted:
            log.warning("adopted %d unfinished action(s)", len(adopted))
        return len(adopted)

    def _start(self, planned: _Planned, runners: Mapping[str, Runner]) -> None:
        self._queue()
        task = asyncio.get_running_loop().create_task(self._carry_out(planned, runners))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def results(self) -> AsyncIterator[bytes]:
        """Yield packed :class:`ExecutorResults` as actions finish (a Ray stream).

        Outcomes that finish together are recorded in the action log in one
        transaction before their events go out. Chunks are paced
        (``RESULTS_MIN_GAP_S``): what finishes soon after a chunk waits out the
        gap and goes in the next one; after a quiet spell a chunk goes at once.
        """
        done = self._queue()
        loop = asyncio.get_running_loop()
        last = float("-inf")
        while True:
            chunk = [await done.get()]
            rest_s = last + RESULTS_MIN_GAP_S - loop.time()
            if rest_s > 0:
                await asyncio.sleep(rest_s)
            last = loop.time()
            while not done.empty() and len(chunk) < 1000:
                chunk.append(done.get_nowait())
            outcomes = [(f.key, f.status, f.detail) for f in chunk if f.status is not None]
            try:
                await _in_store(len(outcomes), partial(self._actions.finish_many, outcomes))
            except Exception:  # the outcome events still go out
                log.exception("could not record %d action outcomes", len(chunk))
            yield ExecutorResults(
                [f.event for f in chunk],
                [f.registry for f in chunk if f.registry is not None],
            ).pack()

    async def in_flight(self) -> int:
        """Actions started and not finished yet."""
        return len(self._tasks)

    async def close(self) -> None:
        """Release the runners' connections."""
        if self._runner_set is not None:
            await self._runner_set.close()

    async def _carry_out(self, planned: _Planned, runners: Mapping[str, Runner]) -> None:
        assert self._slots is not None and self._done is not None
        run = planned.run
        async with self._slots:
            status, detail, result, attempts = await self._attempts(run, runners)
        if status == "failed":
            self._log_failure(run, detail)
        event = _action_event(
            status, run, planned.triggered, self._clock.now(), detail, attempts, result
        )
        registry = result.registry if result is not None else None
        self._done.put_nowait(_Finished(run.key, status, detail, event, registry))

    def _log_failure(self, run: ActionRun, reason: str) -> None:
        """One line per failed action, naming the automation and the reason; at most
        one per automation every few seconds (saying how many were left out)."""
        skipped = self._failures.admit(str(run.automation.id))
        if skipped is None:
            return
        more = f" ({skipped} more failed since the last line)" if skipped else ""
        log.warning(
            "action %d (%s) of automation %r failed: %s%s",
            run.index,
            run.action.type,
            run.automation.name,
            reason,
            more,
            extra={"automation": str(run.automation.id), "firing": str(run.firing.id)},
        )

    async def _attempts(
        self, run: ActionRun, runners: Mapping[str, Runner]
    ) -> tuple[str, str, ActionResult | None, int]:
        runner = runners.get(run.action.type)
        if runner is None:
            return "failed", f"action type {run.action.type!r} cannot run here", None, 0
        settings = self._settings
        attempt = 1
        while True:
            this = ActionRun(
                run.action, run.automation, run.firing, run.event, run.index, run.key, attempt
            )
            try:
                result = await asyncio.wait_for(runner(this), settings.action_timeout_s)
                return "executed", result.detail, result, attempt
            except TransientFailure as exc:
                reason, retry_after = str(exc), exc.retry_after_s
            except TimeoutError:
                reason = f"timed out after {settings.action_timeout_s:g}s"
                retry_after = None
            except ActionFailed as exc:
                return "failed", str(exc), None, attempt
            except Exception as exc:  # an action's bug must not kill the executor
                log.exception(
                    "action crashed",
                    extra={"automation": str(run.automation.id), "action_type": run.action.type},
                )
                return "failed", f"{type(exc).__name__}: {exc}", None, attempt
            if attempt > settings.max_retries:
                tries = "attempt" if attempt == 1 else "attempts"
                return "failed", f"{reason} (gave up after {attempt} {tries})", None, attempt
            delay = backoff_delay(attempt, settings, self._rng)
            if retry_after is not None:
                delay = min(max(delay, retry_after), settings.backoff_max_s)
            log.info(
                "action will be retried",
                extra={"key": run.key, "attempt": attempt, "reason": reason, "delay_s": delay},
            )
            await self._sleep(delay)
            attempt += 1


# The least time between two chunks of the results stream. Each chunk is a Ray
# stream item, a write transaction in the action log (the daemon's event log
# appends wait for it) and an emit into the daemon's event log; the outcomes of
# a steady flow of firings otherwise went one or two per chunk. An action's
# effect is not delayed by it, only the events that report it.
RESULTS_MIN_GAP_S = 0.01


@lru_cache(maxsize=1024)
def _automation(document: str) -> Automation:
    """An automation from its JSON, parsed once per version: every batch of
    firings carries its automations' documents, and validating one costs
    more than running a simple action."""
    return Automation.model_validate_json(document)


def _plan(blob: bytes) -> list[_Planned]:
    documents, jobs = unpack(blob)
    automations = {a: _automation(doc) for a, doc in documents.items()}
    planned: list[_Planned] = []
    for automation_id, firing_row, triggered_row in jobs:
        job = pack([documents[automation_id], firing_row, triggered_row])
        planned += _plan_firing(automations[automation_id], firing_row, triggered_row, job)
    return planned


def _plan_job(job: bytes) -> list[_Planned]:
    """The actions of one firing, from the job the action log kept."""
    document, firing_row, triggered_row = unpack(job)
    automation = _automation(document)
    return _plan_firing(automation, firing_row, triggered_row, job)


def _plan_firing(
    automation: Automation, firing_row: Any, triggered_row: Any, job: bytes
) -> list[_Planned]:
    firing = firing_from_wire(firing_row)
    triggered = event_from_wire(triggered_row)
    plan: list[tuple[Action, Event | None]]
    if firing.state is TriggerState.Resolved:
        # Marmot's extension: actions_on_resolve see the automation.resolved event.
        plan = [(action, triggered) for action in automation.actions_on_resolve]
    else:
        plan = [(action, firing.triggering_event) for action in automation.actions]
        # SEMANTICS §5: actions_on_trigger see the automation.triggered event.
        plan += [(action, triggered) for action in automation.actions_on_trigger]
    return [
        _Planned(
            ActionRun(action, automation, firing, source, index, firing_key(firing.id, index)),
            triggered,
            job,
        )
        for index, (action, source) in enumerate(plan)
    ]


# A store call for this many rows or fewer runs on the event loop: a worker
# thread's round trip costs more than such a transaction (at 200 firings/s the
# hand-offs were ~15% of an executor's time). Bigger ones go to a thread.
_INLINE_ROWS = 64
_T = TypeVar("_T")


# While the store refuses writes for a while (a full disk), a store call is
# tried again after a back-off doubling up to this, for as long as it takes.
_STORE_RETRY_MAX_S = 2.0


async def _in_store(rows: int, call: Callable[[], _T]) -> _T:
    """Run a store call for ``rows`` rows: inline when small, else on a thread.

    A call the store refuses with a retryable error (``StorageFull``) is made
    again after a back-off until it goes through: a claim or an outcome is
    recorded late, never dropped (the executor's calls wait meanwhile).
    """
    delay_s = 0.0
    while True:
        try:
            if rows <= _INLINE_ROWS:
                return call()
            return await asyncio.to_thread(call)
        except MarmotError as exc:
            if not exc.is_retryable:
                raise
            if not delay_s:
                log.warning("the action log refuses writes, trying again: %s", exc)
            delay_s = min(max(delay_s * 2, 0.05), _STORE_RETRY_MAX_S)
        await asyncio.sleep(delay_s)


# A runner's detail naming what it acted on -> (resource id prefix, role), as
# Prefect's action events relate them.
_ACTED_ON = {
    "deployment_id": ("prefect.deployment.", "target"),
    "work_pool_id": ("prefect.work-pool.", "target"),
    "work_queue_id": ("prefect.work-queue.", "target"),
    "automation_id": ("prefect.automation.", "target"),
    "block_document_id": ("prefect.block-document.", "block"),
    "block_type_slug": ("prefect.block-type.", "block-type"),
}


def _acted_on(action_type: str, details: Mapping[str, object]) -> list[dict[str, str]]:
    """The related resources of what an action acted on, from its runner's details."""
    related: list[dict[str, str]] = []
    for key, (prefix, role) in _ACTED_ON.items():
        value = details.get(key)
        if value:
            resource = {RESOURCE_ID: f"{prefix}{value}", RESOURCE_ROLE: role}
            if key == "block_document_id" and details.get("block_name"):
                resource[RESOURCE_NAME] = str(details["block_name"])
            related.append(resource)
    flow_run = details.get("flow_run_id")
    if flow_run:
        # The run a deployment was run into, or the run acted on.
        role = "flow-run" if action_type == "run-deployment" else "target"
        related.append({RESOURCE_ID: f"prefect.flow-run.{flow_run}", RESOURCE_ROLE: role})
    return related


def _action_event(
    status: str,
    run: ActionRun,
    triggered: Event,
    occurred: datetime,
    detail: str = "",
    attempts: int = 0,
    result: ActionResult | None = None,
) -> Event:
    """An action's triggered / executed / failed event, shaped as Prefect's: what the
    action acted on (its target, the block, the flow run it started) among the
    related resources, and an executed action's details (a webhook's
    ``status_code``...) in the payload."""
    automation, firing = run.automation, run.firing
    payload: dict[str, Any] = {
        "action_index": run.index,
        "action_type": run.action.type,
        "invocation": str(firing.id),
    }
    if status == "failed":
        payload["reason"] = detail
    elif detail:
        payload["result"] = detail
    if attempts:
        payload["attempts"] = attempts
    details = dict(result.extra) if result is not None else {}
    for key, value in details.items():
        payload.setdefault(key, value)
    related = _acted_on(run.action.type, details)
    related.append(
        {RESOURCE_ID: f"prefect.event.{triggered.id}", RESOURCE_ROLE: "automation-triggered-event"}
    )
    if firing.triggering_event is not None:
        related.append(
            {
                RESOURCE_ID: f"prefect.event.{firing.triggering_event.id}",
                RESOURCE_ROLE: "triggering-event",
            }
        )
    # Made of ids, names and strings made here: constructed, not validated again.
    return trusted_event(
        name_uuid(FIRING_NAMESPACE, f"action|{firing.id}|{run.index}|{status}"),
        occurred,
        f"prefect.automation.action.{status}",
        {
            RESOURCE_ID: f"prefect.automation.{automation.id}",
            RESOURCE_NAME: automation.name,
            "prefect.trigger-type": automation.trigger.type,
        },
        related,
        payload,
    )


def firing_key(firing_id: UUID, index: int) -> str:
    """The idempotency key of one action of one firing."""
    return f"{firing_id}:{index}"
