"""Where automations live: the registry of hosted automations and their actors.

``Placement`` puts each enabled automation into an automation actor (one
each, or ``automations_per_actor`` to an actor), routes its events there,
takes it out again, recovers automations that Ray restarted empty, runs
proactive evaluation of due automations, checkpoints every actor and answers
``explain``. What the actors report goes to ``on_outcome``; recovery
outcomes to ``on_recovered``; new deadlines to ``on_deadlines``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.metrics import Metrics
from marmot.actors.packing import Layout
from marmot.actors.router import Router
from marmot.actors.runtime import AutomationRef, RayRuntime
from marmot.actors.store import Store
from marmot.actors.tasks import TaskGroup
from marmot.actors.wire import Outcome
from marmot.engine.clock import Clock
from marmot.engine.models.automations import Automation
from marmot.engine.models.explain import Explanation
from marmot.engine.triggers.evaluator import Evaluator

log = logging.getLogger(__name__)

__all__ = ["OutcomeHandler", "Placement"]

OutcomeHandler = Callable[[Outcome], Awaitable[None]]

# Automations loaded or recovered by one actor call in ``place_many``.
PLACE_PART = 250
# Changed automations checkpointed by one actor call (~10 ms of snapshots and
# writes): a shared actor's 2,500 in one call held a deadline up ~100 ms.
CHECKPOINT_PART = 250


@dataclass
class _Actor:
    ref: AutomationRef
    automations: set[str] = field(default_factory=set)


class Placement:
    """The hosted automations (documents included) and the actors hosting them."""

    def __init__(
        self,
        runtime: RayRuntime,
        router: Router,
        store: Store,
        *,
        per_actor: int | Literal["auto"],
        resolved_states: bool,
        max_keys: int | None,
        on_outcome: OutcomeHandler,
        on_recovered: OutcomeHandler,
        on_deadlines: Callable[[dict[str, int | None]], None],
        metrics: Metrics,
        tasks: TaskGroup,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._runtime = runtime
        self._router = router
        self._store_factory = partial(Store.open, store.path)
        # The node's budget is known once Ray runs (``Service.start`` sets it).
        self.layout = Layout(per_actor, budget=1_000_000)
        self._resolved_states = resolved_states
        self._max_keys = max_keys
        self._on_outcome = on_outcome
        self._on_recovered = on_recovered
        self._on_deadlines = on_deadlines
        self._metrics = metrics
        self._tasks = tasks
        self._clock = clock
        self.automations: dict[str, Automation] = {}
        self.documents: dict[str, str] = {}
        self._actor_of: dict[str, str] = {}
        self._actors: dict[str, _Actor] = {}

    @property
    def actor_count(self) -> int:
        """How many automation actors are running."""
        return len(self._actors)

    def refs(self) -> list[AutomationRef]:
        """Every automation actor."""
        return [actor.ref for actor in self._actors.values()]

    def automation(self, automation_id: str) -> Automation | None:
        """A hosted automation, or None."""
        return self.automations.get(automation_id)

    def _actor_key_for(self, automation_id: str) -> str:
        hosted = {key: actor.automations for key, actor in self._actors.items()}
        return self.layout.key_for(automation_id, hosted)

    def alone(self) -> list[str]:
        """The automations in actors of their own (to move once the layout packs)."""
        return [
            automation_id
            for key, actor in self._actors.items()
            if Layout.alone(key)
            for automation_id in actor.automations
        ]

    async def place(self, automation: Automation, *, recover: bool = False) -> None:
        """Host an automation in an actor: fresh, or (``recover``) from its checkpoint."""
        await self.place_many([automation], recover=recover)

    async def place_many(self, automations: Sequence[Automation], *, recover: bool = False) -> None:
        """``place`` for many automations at once: one call per actor for each part of
        ``PLACE_PART`` automations (a fleet created or recovered in bulk)."""
        by_actor: dict[str, list[tuple[str, str]]] = {}
        for automation in automations:
            self._warn_unresolved(automation)
            automation_id = str(automation.id)
            key = self._actor_of.get(automation_id) or self._actor_key_for(automation_id)
            actor = self._actor(key)
            actor.automations.add(automation_id)
            document = automation.model_dump_json()
            self.automations[automation_id] = automation
            self.documents[automation_id] = document
            self._actor_of[automation_id] = key
            by_actor.setdefault(key, []).append((automation_id, document))
        now, held = self._clock.now_us(), self._router.held_seqs()
        recovering: list[Awaitable[Outcome]] = []
        loading: list[Awaitable[dict[str, int | None]]] = []
        for key, hosted in by_actor.items():
            ref = self._actors[key].ref
            for start in range(0, len(hosted), PLACE_PART):
                part = hosted[start : start + PLACE_PART]
                documents = [document for _, document in part]
                # Submitted before the routes exist (as in ``place``).
                if recover:
                    recovering.append(ref.recover_many(documents, now, held))
                else:
                    loading.append(ref.load_many(documents))
                for automation_id, _ in part:
                    matchers = Evaluator(self.automations[automation_id]).matchers
                    self._router.route(automation_id, key, matchers)
        for outcome in await asyncio.gather(*recovering):
            await self._on_recovered(outcome)
        for deadlines in await asyncio.gather(*loading):
            self._on_deadlines(deadlines)

    def _actor(self, key: str) -> _Actor:
        actor = self._actors.get(key)
        if actor is None:
            ref = self._runtime.automation_actor(
                key, self._store_factory, self._resolved_states, self._max_keys
            )
            actor = self._actors[key] = _Actor(ref)
            self._router.add_actor(key, ref)
        return actor

    def _warn_unresolved(self, automation: Automation) -> None:
        if automation.actions_on_resolve and not self._resolved_states:
            log.warning(
                "automation %r has actions_on_resolve, which run only with resolved_states "
                "on (as in Prefect's server, it never resolves)",
                automation.name,
                extra={"automation": str(automation.id)},
            )

    async def unplace(self, automation_id: str) -> None:
        """Stop hosting an automation (its actor goes when it hosts nothing else)."""
        key = self._actor_of.pop(automation_id, None)
        self._router.unroute(automation_id)
        self.automations.pop(automation_id, None)
        self.documents.pop(automation_id, None)
        self._on_deadlines({automation_id: None})
        if key is None:
            return
        actor = self._actors[key]
        actor.automations.discard(automation_id)
        if actor.automations:
            await actor.ref.unload(automation_id)
            return
        del self._actors[key]
        self._router.remove_actor(key)
        self._runtime.kill(actor.ref)

    async def move(self, automation_id: str) -> bool:
        """Move an automation into the actor the layout now gives it, state and all
        (as a restart would: checkpoint, then recover there); returns whether it moved.

        Its route is taken away first; the checkpoint is taken at the sequence
        number up to which its actor had been sent everything, after what was
        queued for it has been applied; the recovery in the new actor replays
        the log since, and its firings already dispatched are not dispatched again.
        """
        old_key = self._actor_of.get(automation_id)
        automation = self.automations.get(automation_id)
        if old_key is None or automation is None or old_key not in self._actors:
            return False
        actor = self._actors[old_key]
        upto = self._router.sent_upto(old_key)
        self._router.unroute(automation_id)
        await self._router.drain([old_key])
        await actor.ref.checkpoint(upto)
        del self._actor_of[automation_id]
        actor.automations.discard(automation_id)
        if actor.automations:
            await actor.ref.unload(automation_id)
        else:
            del self._actors[old_key]
            self._router.remove_actor(old_key)
            self._runtime.kill(actor.ref)
        await self.place(automation, recover=True)
        return True

    def reload(self, automation_ids: Sequence[str]) -> None:
        """Put automations back into an actor that Ray restarted empty.

        The recover calls are submitted at once, so they reach the actor
        before anything sent after them; each restores its checkpoint and
        replays the log since.
        """
        for automation_id in automation_ids:
            key = self._actor_of.get(automation_id)
            document = self.documents.get(automation_id)
            if key is None or document is None or key not in self._actors:
                continue
            self._metrics.actor_call_failures.labels("actor_restarted").inc()
            log.warning("automation actor restarted; recovering", extra={"actor": key})
            reply = self._actors[key].ref.recover(
                document, self._clock.now_us(), self._router.held_seqs()
            )
            self._tasks.spawn(self._recover_later(reply))

    async def _recover_later(self, reply: Awaitable[Outcome]) -> None:
        try:
            outcome = await reply
        except Exception:  # the next call to the actor finds it empty and tries again
            self._metrics.actor_call_failures.labels("recover").inc()
            log.exception("recovering an automation actor failed")
            return
        await self._on_recovered(outcome)

    def expire(self, automation_ids: list[str], as_of_us: int, now_us: int) -> None:
        """Proactive evaluation of due automations, one call per actor hosting them."""
        by_actor: dict[str, list[str]] = {}
        for automation_id in automation_ids:
            key = self._actor_of.get(automation_id)
            if key is not None:
                by_actor.setdefault(key, []).append(automation_id)
        for key, hosted in by_actor.items():
            actor = self._actors.get(key)
            if actor is not None:
                self._tasks.spawn(self._expire(actor.ref, as_of_us, now_us, hosted))

    async def _expire(
        self, ref: AutomationRef, as_of: int, now: int, automation_ids: list[str]
    ) -> None:
        try:
            outcome = await ref.expire(as_of, now, automation_ids)
        except Exception:
            self._metrics.actor_call_failures.labels("expire").inc()
            log.exception("proactive evaluation failed", extra={"automations": automation_ids})
            return
        if outcome.missing:
            self.reload(outcome.missing)
        await self._on_outcome(outcome)

    async def checkpoint(self, timeout_s: float = 30.0) -> int:
        """Checkpoint every automation actor now; returns how many automations were saved."""
        calls = [self._checkpoint_actor(key, actor) for key, actor in self._actors.items()]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout_s)
        saved = 0
        for result in results:
            if isinstance(result, BaseException):
                self._metrics.actor_call_failures.labels("checkpoint").inc()
                log.error("checkpoint failed: %s", result)
            else:
                saved += int(result)
        return saved

    async def _checkpoint_actor(self, key: str, actor: _Actor) -> int:
        """Checkpoint one actor's changed automations, ``CHECKPOINT_PART`` per call: the
        calls routed meanwhile (a deadline's evaluation) go in between the parts."""
        # The first call is submitted with the actor's safe sequence number, before
        # anything else is routed: idle automations' checkpoints move on too. The
        # parts after it keep that number (still safe), so none moves twice.
        ref = actor.ref
        upto = self._router.sent_upto(key)
        round_ = (upto, ref.changes)
        if ref.checkpointed == round_:
            # Nothing sent to it and nothing logged since its last complete
            # checkpoint: the call would write nothing (an idle actor is not woken).
            return 0
        saved, left = await ref.checkpoint_part(upto, CHECKPOINT_PART)
        # Those that change while the parts go wait for the next round.
        for _ in range(-(-left // CHECKPOINT_PART)):
            if self._actors.get(key) is not actor:
                break  # replaced or retired meanwhile
            more, left = await ref.checkpoint_part(upto, CHECKPOINT_PART)
            saved += more
            if not left:
                break
        if not left:
            ref.checkpointed = round_
        return saved

    async def explain(self, automation_id: str, limit: int, offset: int) -> Explanation | None:
        """A hosted automation's live state (after the events already accepted; a page
        of ``limit`` buckets per trigger from ``offset``), or None when it is not hosted."""
        key = self._actor_of.get(automation_id)
        if key is None:
            return None
        await self._router.drain([key])
        return await self._actors[key].ref.explain(automation_id, limit, offset)

    async def state(self, automation_id: str) -> dict[str, Any] | None:
        """A copy of a hosted automation's engine state after the events already
        accepted (``Evaluator.snapshot``), or None when it is not hosted."""
        key = self._actor_of.get(automation_id)
        if key is None:
            return None
        await self._router.drain([key])
        return await self._actors[key].ref.state(automation_id)

    def kill_all(self) -> None:
        """Stop every automation actor for good."""
        for actor in self._actors.values():
            self._runtime.kill(actor.ref)
        self._actors.clear()
