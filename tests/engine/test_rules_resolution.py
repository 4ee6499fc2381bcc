"""SEMANTICS §5, Marmot's opt-in extension: Resolved states (engine/resolution.py).

Times are on a fake clock: events carry their own ``occurred`` and
``received``; proactive evaluation runs at the ``as_of`` the test gives.
"""

from __future__ import annotations

from typing import Any

from marmot.engine.timestamps import to_us
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing, TriggerState, triggered_event
from marmot.engine.triggers.resolution import FORGET_AFTER_US
from tests.engine.factories import at, automation, event

PROACTIVE = {
    "type": "event",
    "posture": "Proactive",
    "after": ["job.started"],
    "expect": ["job.finished"],
    "for_each": ["prefect.resource.id"],
    "within": 60,
}
REACTIVE = {
    "type": "event",
    "expect": ["x"],
    "for_each": ["prefect.resource.id"],
    "threshold": 2,
    "within": 30,
}


def resolving(trigger: dict[str, Any], **kw: Any) -> Evaluator:
    return Evaluator(automation(trigger, **kw), resolve=True)


def states(firings: list[Firing]) -> list[tuple[str, str]]:
    return [(f.state.value, dict(f.labels).get("prefect.resource.id", "")) for f in firings]


def test_off_by_default_nothing_resolves() -> None:
    plain = Evaluator(automation(PROACTIVE))
    plain.apply([event("job.started", 0, "j1")])
    assert states(plain.advance(at(61), at(61))) == [("Triggered", "j1")]
    assert plain.apply([event("job.finished", 70, "j1")]) == []
    assert plain.explain().triggers[0].unresolved == []


def test_proactive_resolves_when_the_expected_event_arrives_late() -> None:
    engine = resolving(PROACTIVE)
    engine.apply([event("job.started", 0, "j1"), event("job.started", 1, "j2")])
    fired = engine.advance(at(62), at(62))
    assert states(fired) == [("Triggered", "j1"), ("Triggered", "j2")]
    assert [v.labels for v in engine.explain().triggers[0].unresolved] == [
        {"prefect.resource.id": "j1"},
        {"prefect.resource.id": "j2"},
    ]

    # Another key's event resolves nothing; j2's own does, with that event.
    assert engine.apply([event("job.finished", 65, "j9")]) == []
    finished = event("job.finished", 70, "j2", received=71)
    [resolved] = engine.apply([finished])
    assert resolved.state is TriggerState.Resolved
    assert resolved.triggering_event == finished
    assert resolved.fired_us == to_us(at(71))
    assert resolved.labels == {"prefect.resource.id": "j2"}
    assert resolved.id != fired[1].id
    # Resolved once: a second finish is nothing new.
    assert engine.apply([event("job.finished", 75, "j2")]) == []
    assert [v.labels for v in engine.explain().triggers[0].unresolved] == [
        {"prefect.resource.id": "j1"}
    ]


def test_the_resolved_event_names_the_state() -> None:
    auto = automation(PROACTIVE, name="must finish")
    engine = Evaluator(auto, resolve=True)
    engine.apply([event("job.started", 0, "j1")])
    engine.advance(at(61), at(61))
    finished = event("job.finished", 70, "j1")
    [resolved] = engine.apply([finished])
    emitted = triggered_event(auto, resolved)
    assert emitted.event == "prefect.automation.resolved"
    assert emitted.resource["prefect.posture"] == "Proactive"
    assert emitted.payload["triggering_event"]["id"] == str(finished.id)


def test_proactive_threshold_counts_from_the_fired_window() -> None:
    engine = resolving({**PROACTIVE, "threshold": 3})
    engine.apply([event("job.started", 0, "j1"), event("job.finished", 10, "j1")])
    assert states(engine.advance(at(61), at(61))) == [("Triggered", "j1")]
    # One counted in the window, so two more resolve it; one before the
    # window's start never counts.
    assert engine.apply([event("job.finished", -5, "j1")]) == []
    assert engine.apply([event("job.finished", 70, "j1")]) == []
    assert states(engine.apply([event("job.finished", 80, "j1")])) == [("Resolved", "j1")]


def test_reactive_resolves_when_its_window_closes() -> None:
    engine = resolving(REACTIVE)
    fired = engine.apply([event("x", 0, "r1"), event("x", 5, "r1")])
    assert states(fired) == [("Triggered", "r1")]
    # The window opened by the first event ends at 0 + 30 s.
    assert engine.next_deadline() == at(30)
    assert engine.advance(at(29), at(29)) == []
    [resolved] = engine.advance(at(30), at(31))
    assert resolved.state is TriggerState.Resolved
    assert resolved.triggering_event == fired[0].triggering_event
    assert resolved.fired_us == to_us(at(31))
    assert engine.explain().triggers[0].unresolved == []


def test_reactive_firing_again_resolves_the_earlier_state_first() -> None:
    engine = resolving(REACTIVE)
    engine.apply([event("x", 0, "r1"), event("x", 5, "r1")])
    # Events of the next window arrive before the events clock reaches 30 s.
    again = engine.apply([event("x", 40, "r1"), event("x", 41, "r1")])
    assert states(again) == [("Resolved", "r1"), ("Triggered", "r1")]


def test_reactive_window_of_no_length_resolves_as_it_fires() -> None:
    engine = resolving({"type": "event", "expect": ["x"], "threshold": 1, "within": 0})
    assert states(engine.apply([event("x", 0, "r1")])) == [("Triggered", ""), ("Resolved", "")]


def test_composite_triggers_do_not_resolve() -> None:
    engine = resolving(
        {
            "type": "compound",
            "require": "any",
            "triggers": [REACTIVE, {**REACTIVE, "expect": ["y"]}],
        }
    )
    fired = engine.apply([event("x", 0, "r1"), event("x", 1, "r1")])
    assert states(fired) == [("Triggered", "")]
    assert engine.advance(at(100), at(100)) == []
    assert engine.next_deadline() is None or engine.advance(at(1000), at(1000)) == []


def test_unresolved_proactive_states_are_forgotten_in_time() -> None:
    engine = resolving(PROACTIVE)
    engine.apply([event("job.started", 0, "j1")])
    engine.advance(at(61), at(61))
    later = at(61 + FORGET_AFTER_US / 1e6)
    assert engine.advance(later, later) == []
    assert engine.explain().triggers[0].unresolved == []
    assert engine.apply([event("job.finished", 61 + FORGET_AFTER_US / 1e6 + 1, "j1")]) == []


def test_open_states_survive_snapshot_and_restore() -> None:
    engine = resolving(REACTIVE)
    engine.apply([event("x", 0, "r1"), event("x", 5, "r1")])
    proactive = resolving(PROACTIVE)
    proactive.apply([event("job.started", 0, "j1")])
    proactive.advance(at(61), at(61))

    copy = resolving(REACTIVE)
    copy.restore(engine.snapshot())
    assert copy.next_deadline() == at(30)
    assert states(copy.advance(at(30), at(30))) == [("Resolved", "r1")]

    other = resolving(PROACTIVE)
    other.restore(proactive.snapshot())
    assert states(other.apply([event("job.finished", 70, "j1")])) == [("Resolved", "j1")]

    # A snapshot taken with resolution off restores empty.
    plain = Evaluator(automation(PROACTIVE))
    plain.apply([event("job.started", 0, "j1")])
    plain.advance(at(61), at(61))
    fresh = resolving(PROACTIVE)
    fresh.restore(plain.snapshot())
    assert fresh.apply([event("job.finished", 70, "j1")]) == []


def test_resolution_leaves_triggered_firings_unchanged() -> None:
    stream = [
        event("job.started", 0, "j1"),
        event("job.started", 10, "j2"),
        event("job.finished", 20, "j2"),
        event("job.started", 100, "j3"),
    ]
    plain, extended = Evaluator(automation(PROACTIVE)), resolving(PROACTIVE)
    out_plain, out_ext = [], []
    for engine, out in ((plain, out_plain), (extended, out_ext)):
        for item in stream:
            out += engine.apply([item])
            out += engine.advance(item.occurred, item.occurred)
        out += engine.advance(at(500), at(500))
    triggered = [f for f in out_ext if f.state is TriggerState.Triggered]
    assert [(f.id, f.labels) for f in triggered] == [(f.id, f.labels) for f in out_plain]
