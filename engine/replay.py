"""Replay: run automations over recorded events on a simulated clock (SEMANTICS §7).

``Replay`` is the daemon's schedule in miniature. Events are processed in
arrival order at their arrival time; proactive evaluation runs either at
ticks (``start + k * tick``, as Prefect polls, which reproduces Prefect's
output exactly) or, with ``tick=0``, at every deadline the automations ask
for, as the daemon does. Idle ticks are skipped: running them would change
nothing.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from pydantic import Field

from marmot.engine.causal import CausalOrdering
from marmot.engine.clock import EventsClock
from marmot.engine.interest import InterestIndex
from marmot.engine.models._base import MarmotModel
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event, UtcDatetime
from marmot.engine.models.triggers import iter_event_triggers, iter_metric_triggers
from marmot.engine.templates.checks import validated_automation
from marmot.engine.timestamps import US_PER_S, from_us, to_us
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing, conformance_line

# Automations without an id get one derived from their name and position,
# so replays of the same files give the same firing ids.
_REPLAY_NAMESPACE = UUID("0b7f0c9e-7a51-5d1e-9c3f-2a4e6d8b1c00")
# Later than any time: nothing is pending.
_NEVER = 2**63
# At most this many event names are remembered as interesting or not.
_NAMES_KEPT = 8192


class Scenario(MarmotModel):
    """A conformance scenario: automations, events in arrival order, a clock."""

    name: str
    description: str = ""
    tick_seconds: float = Field(default=1.0, ge=0)
    start: UtcDatetime
    until: UtcDatetime
    automations: list[dict[str, Any]]
    events: list[dict[str, Any]]


def load_automations(documents: Sequence[dict[str, Any]], *, scope: str = "") -> list[Automation]:
    """Validate automation documents; give id-less ones a stable derived id."""
    automations = []
    for index, document in enumerate(documents):
        if "id" not in document:
            name = document.get("name", "")
            derived = uuid5(_REPLAY_NAMESPACE, f"{scope}/{index}/{name}")
            document = {**document, "id": str(derived)}
        automations.append(validated_automation(document))
    return automations


@dataclass(frozen=True, slots=True)
class ReplayFiring:
    """A firing produced during replay, with its automation."""

    automation: Automation
    firing: Firing

    def line(self) -> dict[str, Any]:
        """The firing as a line of ``marmot replay`` output."""
        return conformance_line(self.automation.name, self.firing)


class Replay:
    """Drives evaluators over events on a simulated wall clock."""

    def __init__(
        self,
        automations: Sequence[Automation],
        *,
        start: datetime,
        tick: float,
        resolve: bool = False,
    ) -> None:
        if tick < 0:
            raise ValueError("tick must be >= 0 seconds")
        self.automations = list(automations)
        self.evaluators = [Evaluator(a, resolve=resolve) for a in self.automations]
        self.index: InterestIndex[int] = InterestIndex()
        for i, automation in enumerate(self.automations):
            if automation.enabled:
                self.index.set(i, self.evaluators[i].matchers)
        self.events_clock = EventsClock()
        self.causal = CausalOrdering()
        self.start = to_us(start)
        self.clock = self.start
        self.tick = round(tick * US_PER_S)
        self._next_tick = 0
        self.firings: list[ReplayFiring] = []
        # Lazy heap of (deadline on the events clock, evaluator); -1 means due now.
        self._deadlines: list[tuple[int, int]] = []
        # Event name -> whether any automation looks at such events (_learn_name).
        self._named: dict[str, bool] = {}
        # No tick is due for an event arriving before this (µs; see _quiet).
        self._quiet_until = -1
        self._quiet_offset = 0
        self._current: list[int | None] = [None] * len(self.evaluators)
        for i in range(len(self.evaluators)):
            self._schedule(i)

    # -- bookkeeping -------------------------------------------------------------

    def _schedule(self, i: int) -> None:
        deadline = self.evaluators[i].next_deadline_us() if self.automations[i].enabled else None
        self._current[i] = deadline
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, i))
            if deadline < self._quiet_until:
                self._quiet_until = -1  # it may be due before: look again

    def _record(self, i: int, firings: list[Firing]) -> None:
        automation = self.automations[i]
        self.firings.extend(ReplayFiring(automation, f) for f in firings)

    def _next_work(self) -> int | None:
        """The wall time (µs) of the earliest pending proactive or follower work."""
        heap = self._deadlines
        while heap and self._current[heap[0][1]] != heap[0][0]:
            heapq.heappop(heap)
        best: int | None = None
        if heap:
            deadline = heap[0][0]
            best = -1 if deadline < 0 else deadline - self.events_clock.offset_us()
        lost = self.causal.next_deadline()
        if lost is not None:
            lost_us = to_us(lost)
            best = lost_us if best is None else min(best, lost_us)
        return best

    # -- time --------------------------------------------------------------------

    def run_until(self, until: datetime) -> None:
        """Run every tick (or deadline) at or before ``until``."""
        self.run_until_us(to_us(until))

    def run_until_us(self, limit: int) -> None:
        """``run_until`` in microseconds."""
        while True:
            work = self._next_work()
            if work is None:
                self._quiet(_NEVER)
                return
            if self.tick:
                k = max(self._next_tick, -(-(work - self.start) // self.tick))
                when = self.start + k * self.tick
                if when > limit:
                    self._quiet(when)
                    return
                self._next_tick = k + 1
            else:
                when = max(work, self.clock)
                if when > limit:
                    self._quiet(when)
                    return
            self._run_tick(when)

    def _quiet(self, until: int) -> None:
        """Note that no tick is due before ``until`` (µs), so ``feed`` need not look
        again for events arriving earlier.

        It stays true until a deadline earlier than ``until`` is scheduled, a
        follower waits (a lost deadline), or the events clock's offset rises:
        each of these sets it back to -1. Anything else only delays the next
        tick: the clock and the tick counter only move forward, and a stale
        deadline only hides a later one."""
        self._quiet_until = until
        self._quiet_offset = self.events_clock.offset_us()

    def _run_tick(self, when: int) -> None:
        # As Prefect's loops do at a tick: proactive evaluation at ``as_of`` (taken
        # before anything else moves the events clock), then the periodic pass:
        # lost followers are evaluated, and the sweep (with that same ``as_of``)
        # runs after them.
        self.clock = max(self.clock, when)
        now = from_us(self.clock)
        as_of_us = self.clock + self.events_clock.offset_us()
        as_of = from_us(as_of_us)
        heap = self._deadlines
        due: set[int] = set()
        while heap and heap[0][0] <= as_of_us:
            deadline, i = heapq.heappop(heap)
            if self._current[i] == deadline:
                due.add(i)
        for i in sorted(due):
            self._record(i, self.evaluators[i].advance(as_of, now, sweep=False))
        for event in self.causal.release_lost(now):
            due |= self._evaluate(event, to_us(event.occurred))
        for i in sorted(due):
            self.evaluators[i].sweep(as_of, now)
            self._schedule(i)

    # -- events --------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        """An event arrives (at ``received`` if it has one, else ``occurred``).

        It is processed at ``max(clock, arrival)``, which is its ``received``
        time in the sense of SEMANTICS §6.
        """
        occurred = to_us(event.occurred)
        received = event.received
        arrival = occurred if received is None else to_us(received)
        if arrival >= self._quiet_until:
            self.run_until_us(arrival)
        tick = self.tick
        if tick and arrival >= self.start + self._next_tick * tick:
            # Every tick at or before the arrival has now run (idle ones skipped).
            self._next_tick = (arrival - self.start) // tick + 1
        if arrival > self.clock:
            self.clock = arrival
        ready = self.causal.offer_us(event, self.clock)
        if ready is None:
            return  # processed already: dropped before anything sees it (SEMANTICS §6)
        self.events_clock.observe_us(occurred, self.clock)
        named = self._named.get(event.event)
        if named is None:
            named = self._learn_name(event.event)
        for item in ready:
            if item is not event:
                self._evaluate(item, to_us(item.occurred))
            elif named:
                self._evaluate_arrived(event, occurred)
        if event.follows is not None or self.events_clock.offset_us() > self._quiet_offset:
            # It may wait (a lost deadline), or the offset rose (deadlines come
            # due earlier on the wall clock): look again at the next event.
            self._quiet_until = -1

    def _learn_name(self, name: str) -> bool:
        """Whether any enabled automation's trigger looks at events named ``name``
        (what the interest index routes by first), remembered per name: most
        events of a stream concern no automation, and are then skipped at once."""
        named = any(
            matcher.interested_in_name(name)
            for i, evaluator in enumerate(self.evaluators)
            if self.automations[i].enabled
            for matcher in evaluator.matchers
        )
        if len(self._named) >= _NAMES_KEPT:
            self._named.clear()
        self._named[name] = named
        return named

    def _evaluate_arrived(self, event: Event, occurred: int) -> None:
        """``_evaluate`` for the event just fed: the events clock has seen it already
        (observing it again changes nothing), and most events reach no evaluator."""
        hits = self.index.route(event)
        if not hits:
            return
        # Visited in the order _evaluate visits them (a set's), so firings are
        # recorded in the same order.
        reached: Iterable[int] = hits if len(hits) == 1 else set(hits)
        clock = self.clock
        for i in reached:
            firings = self.evaluators[i].apply_at(event, occurred, clock)
            if firings:
                self._record(i, firings)
            self._schedule(i)

    def _evaluate(self, event: Event, occurred: int) -> set[int]:
        """Evaluate one event; returns the evaluators it reached."""
        self.events_clock.observe_us(occurred, self.clock)
        reached = set(self.index.route(event))
        for i in reached:
            self._record(i, self.evaluators[i].apply_at(event, occurred, self.clock))
            self._schedule(i)
        return reached

    def run(self, events: Iterable[Event], until: datetime) -> list[ReplayFiring]:
        """Feed every event, run the clock to ``until``; return the sorted firings."""
        feed = self.feed
        for event in events:
            feed(event)
        self.run_until(until)
        return self.sorted_firings()

    def sorted_firings(self) -> list[ReplayFiring]:
        """Firings sorted by ``(fired_at, automation, labels)`` (SEMANTICS §7)."""
        return sorted(
            self.firings,
            key=lambda r: (
                r.firing.fired_us,
                r.automation.name,
                json.dumps(dict(r.firing.labels), sort_keys=True),
            ),
        )


def replay_scenario(
    scenario: Scenario,
    *,
    tick: float | None = None,
    validated: Sequence[Event | None] | None = None,
) -> list[ReplayFiring]:
    """Run a conformance scenario; ``tick`` overrides the scenario's tick.

    ``validated`` holds the scenario's events already made from its file, one
    per event (None where the model must judge it): the CLI reads them the
    fast way (``transport/event_decoder.py``)."""
    automations = load_automations(scenario.automations, scope=scenario.name)
    if validated is None or len(validated) != len(scenario.events):
        validated = [None] * len(scenario.events)
    events = [
        event if event is not None else Event.model_validate(document)
        for event, document in zip(validated, scenario.events, strict=True)
    ]
    return _replay(scenario, automations, events, tick)


def replay_events(
    scenario: Scenario, events: Sequence[Event], *, tick: float | None = None
) -> list[ReplayFiring]:
    """Run a scenario's automations over ``events``, its events already made (the
    CLI decodes a file's events in bulk); ``scenario.events`` is not read."""
    automations = load_automations(scenario.automations, scope=scenario.name)
    return _replay(scenario, automations, events, tick)


def _replay(
    scenario: Scenario,
    automations: Sequence[Automation],
    events: Sequence[Event],
    tick: float | None,
) -> list[ReplayFiring]:
    step = scenario.tick_seconds if tick is None else tick
    return Replay(automations, start=scenario.start, tick=step).run(events, scenario.until)


def default_until(automations: Sequence[Automation], events: Sequence[Event]) -> datetime:
    """For a backtest without ``--until``: the last arrival plus the longest window.

    A metric trigger's window is its ``range`` plus its ``firing_for``: by then
    the last run has left the lookback and a recovery that began then is over.
    """
    last = max(e.received or e.occurred for e in events)
    windows = [t.within for a in automations for t in iter_event_triggers(a.trigger)]
    windows += [
        t.metric.range + t.metric.firing_for
        for a in automations
        for t in iter_metric_triggers(a.trigger)
    ]
    return last + max(windows, default=timedelta(0))
