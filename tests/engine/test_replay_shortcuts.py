"""The replay loop's shortcuts change nothing: same firings as the loop without them.

``Replay.feed`` skips the tick check while no tick can be due (``_quiet``),
skips routing for event names no automation looks at (``_learn_name``) and
takes ``CausalOrdering.offer_us``'s short way for an event that follows
nothing while nothing waits. ``PlainReplay`` below is the loop as first
written, without any of them; random streams with late, out-of-order,
duplicated and following events, replayed both ways at several ticks, must
give the same firings in the same order, line for line.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from marmot.engine.causal import CausalOrdering
from marmot.engine.models.events import Event
from marmot.engine.replay import Replay, ReplayFiring, Scenario, load_automations
from marmot.engine.timestamps import to_us
from tests.conftest import conformance_dir
from tests.engine.factories import at, event

NAMES = ["a.started", "a.finished", "b.failed", "noise.one", "noise.two"]
RESOURCES = ["r1", "r2", "r3"]


class Runaway(Exception):
    """Ticks ran again and again at one time (see ``Bounded``)."""


class Bounded(Replay):
    """A replay that stops when ticks keep running at one time: with ``tick=0``
    an evaluator can stay due at once after its tick (a separate engine bug,
    reported), which loops forever with or without the shortcuts."""

    _same_time = 0

    def _run_tick(self, when: int) -> None:
        self._same_time = self._same_time + 1 if when == self.clock else 0
        if self._same_time > 200:
            raise Runaway
        super()._run_tick(when)


class PlainReplay(Bounded):
    """The replay loop without shortcuts: every event checks for due ticks, is
    routed through the interest index, and goes through ``is_duplicate`` and
    ``admit_us``."""

    def feed(self, event: Event) -> None:
        occurred = to_us(event.occurred)
        arrival = to_us(event.received) if event.received else occurred
        self.run_until_us(arrival)
        if self.tick and arrival >= self.start:
            self._next_tick = max(self._next_tick, (arrival - self.start) // self.tick + 1)
        if arrival > self.clock:
            self.clock = arrival
        if self.causal.is_duplicate(event.id, self.clock):
            return
        self.events_clock.observe_us(occurred, self.clock)
        for ready in self.causal.admit_us(event, self.clock):
            self._evaluate(ready, occurred if ready is event else to_us(ready.occurred))


def _lines(firings: list[ReplayFiring]) -> list[str]:
    return [json.dumps(f.line(), sort_keys=True) for f in firings]


def _both(
    documents: list[dict[str, Any]], events: list[Event], tick: float, until: float
) -> tuple[list[str], list[str]]:
    automations = load_automations(documents, scope="shortcuts")
    fast = Bounded(automations, start=at(0), tick=tick, resolve=True).run(events, at(until))
    automations = load_automations(documents, scope="shortcuts")
    plain = PlainReplay(automations, start=at(0), tick=tick, resolve=True).run(events, at(until))
    return _lines(fast), _lines(plain)


AUTOMATIONS: list[dict[str, Any]] = [
    {
        "name": "b failing",
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["b.failed"],
            "for_each": ["prefect.resource.id"],
            "threshold": 2,
            "within": 30,
        },
    },
    {
        "name": "a stuck",
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "after": ["a.started"],
            "expect": ["a.finished"],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 20,
        },
    },
    {
        "name": "a quiet",
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "expect": ["a.*"],
            "threshold": 1,
            "within": 45,
        },
    },
    {
        "name": "both",
        "trigger": {
            "type": "compound",
            "require": "all",
            "within": 60,
            "triggers": [
                {"type": "event", "expect": ["a.finished"], "threshold": 1, "within": 0},
                {"type": "event", "expect": ["b.failed"], "threshold": 1, "within": 0},
            ],
        },
    },
    {
        "name": "disabled",
        "enabled": False,
        "trigger": {"type": "event", "expect": ["noise.one"], "threshold": 1, "within": 0},
    },
]
for _document in AUTOMATIONS:
    _document["actions"] = [{"type": "do-nothing"}]


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    """Events about a second apart, some out of order, late, repeated or following
    another (whose leader may never come)."""
    count = draw(st.integers(min_value=1, max_value=60))
    made: list[Event] = []
    t = 0.0
    for k in range(count):
        t += draw(st.sampled_from([0.0, 0.3, 1.0, 2.5, 9.0, 40.0]))
        kind = draw(st.integers(min_value=0, max_value=9))
        if kind == 0 and made:  # delivered again
            made.append(draw(st.sampled_from(made)))
            continue
        occurred = t - draw(st.sampled_from([0.0, 0.0, 0.0, 3.0, 70.0]))
        received = t + 1.5 if kind == 1 else None
        follows: UUID | None = None
        if kind == 2 and made:
            follows = draw(st.sampled_from(made)).id
        elif kind == 3:
            follows = UUID(int=10_000 + k)  # may never come (lost after 15 minutes)
        made.append(
            event(
                draw(st.sampled_from(NAMES)),
                occurred,
                draw(st.sampled_from(RESOURCES)),
                id=UUID(int=k + 1),
                follows=follows,
                received=received,
            )
        )
    if draw(st.booleans()):  # leaders that arrive after their followers
        made = made[::-1] if len(made) < 8 else made[4:] + made[:4]
    return made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=streams(), tick=st.sampled_from([0.0, 1.0, 5.0]), extra=st.sampled_from([0, 1000]))
def test_random_streams_fire_the_same_with_and_without_shortcuts(
    events: list[Event], tick: float, extra: int
) -> None:
    last = max(to_us(e.received or e.occurred) for e in events) / 1e6 - to_us(at(0)) / 1e6
    try:
        fast, plain = _both(AUTOMATIONS, events, tick, last + 60 + extra)
    except Runaway:
        reject()
    assert fast == plain


def test_the_shared_scenarios_fire_the_same_with_and_without_shortcuts() -> None:
    folder = conformance_dir()
    for path in sorted([*folder.glob("*.json"), *(folder / "added").glob("*.json")]):
        scenario = Scenario.model_validate_json(path.read_bytes())
        events = [Event.model_validate(document) for document in scenario.events]
        for tick in {scenario.tick_seconds, 0.0}:
            runs = [_outcome(kind, scenario, events, tick) for kind in (Bounded, PlainReplay)]
            assert runs[0] == runs[1], (path.name, tick)


def _outcome(
    kind: type[Bounded], scenario: Scenario, events: list[Event], tick: float
) -> list[str] | None:
    """The firings' lines, or None when the ticks run away."""
    automations = load_automations(scenario.automations, scope=scenario.name)
    try:
        return _lines(
            kind(automations, start=scenario.start, tick=tick).run(events, scenario.until)
        )
    except Runaway:
        return None


def test_a_follower_waiting_past_a_quiet_stretch_is_released_on_time() -> None:
    # The follower's 15-minute deadline is set while no tick was due: the loop
    # must look again, and release it at 900 s, before the next event at 2000 s.
    documents: list[dict[str, Any]] = [
        {
            "name": "finished",
            "trigger": {"type": "event", "expect": ["a.finished"], "threshold": 1, "within": 0},
            "actions": [{"type": "do-nothing"}],
        }
    ]
    events = [
        event("a.started", 0, id=UUID(int=1)),
        event("a.finished", 5, id=UUID(int=2), follows=UUID(int=99)),
        event("noise.one", 2000, id=UUID(int=3)),
    ]
    fast, plain = _both(documents, events, 1.0, 2100)
    assert fast == plain
    fired = [json.loads(line)["fired_at"] for line in fast]
    assert set(fired) == {"2026-03-01T09:15:05Z"}  # released, as lost, at 905 s


def test_offer_drops_duplicates_holds_followers_and_passes_the_rest() -> None:
    causal = CausalOrdering()
    plain = event("noise.one", 0, id=UUID(int=1))
    follower = event("a.finished", 1, id=UUID(int=2), follows=UUID(int=3))
    leader = event("a.started", 2, id=UUID(int=3))

    assert causal.offer_us(plain, to_us(at(0))) == [plain]
    assert causal.offer_us(plain, to_us(at(1))) is None  # within 30 minutes: a duplicate
    assert causal.duplicates == 1
    assert causal.offer_us(follower, to_us(at(1))) == []
    assert causal.next_deadline() == at(901)
    assert [e.id for e in causal.offer_us(leader, to_us(at(2))) or []] == [leader.id, follower.id]
    # Seen 30 minutes ago or more: processed again, as a new event.
    assert causal.offer_us(plain, to_us(at(1800))) == [plain]
