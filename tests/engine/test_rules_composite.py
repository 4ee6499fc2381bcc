"""SEMANTICS §4: compound and sequence triggers combine their children's firings."""

from __future__ import annotations

from typing import Any

from marmot.engine.triggers.evaluator import Evaluator
from tests.engine.factories import at, evaluator, event


def _child(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "event", "posture": "Reactive", "expect": [name], "threshold": 1, **fields}


def _compound(require: int | str, *children: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "compound", "require": require, "triggers": list(children), **fields}


def _sequence(*children: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "sequence", "triggers": list(children), **fields}


def _recorded(ev: Evaluator, path: str = "trigger") -> dict[str, Any]:
    [view] = [v for v in ev.explain().triggers if v.path == path]
    return view.recorded_children


def test_compound_any_fires_on_first_child() -> None:
    ev = evaluator(_compound("any", _child("a"), _child("b")))
    b, a = event("b", 0), event("a", 1)

    [first] = ev.apply([b])
    [second] = ev.apply([a])

    assert (first.event_id, second.event_id) == (b.id, a.id)
    assert first.trigger_path == "trigger"
    assert _recorded(ev) == {}


def test_compound_all_waits_for_every_child() -> None:
    ev = evaluator(_compound("all", _child("a"), _child("b"), _child("c")))
    c = event("c", 2)

    assert ev.apply([event("a", 0), event("b", 1)]) == []
    assert _recorded(ev) == {"trigger.triggers[0]": at(0), "trigger.triggers[1]": at(1)}
    [firing] = ev.apply([c])

    assert firing.event_id == c.id
    assert firing.fired_at == at(2)
    assert _recorded(ev) == {}
    assert ev.apply([event("a", 3), event("b", 4)]) == []


def test_compound_n_of_m() -> None:
    ev = evaluator(_compound(2, _child("a"), _child("b"), _child("c")))
    c = event("c", 2)

    # A child's newer firing replaces its older one: two firings of `a` count once.
    assert ev.apply([event("a", 0), event("a", 1)]) == []
    assert _recorded(ev) == {"trigger.triggers[0]": at(1)}
    [firing] = ev.apply([c])

    assert firing.event_id == c.id
    assert ev.apply([event("b", 3)]) == []


def test_compound_within_forgets_old_child_firings() -> None:
    ev = evaluator(_compound("all", _child("a"), _child("b"), within=10))
    a_late = event("a", 25)

    assert ev.apply([event("a", 0), event("b", 20)]) == []
    assert _recorded(ev) == {"trigger.triggers[1]": at(20)}
    [firing] = ev.apply([a_late])
    assert firing.event_id == a_late.id

    # A firing exactly `within` old is not older than t - within: it still counts.
    assert ev.apply([event("a", 30)]) == []
    assert len(ev.apply([event("b", 40)])) == 1


def test_compound_within_counts_from_firing_times() -> None:
    ev = evaluator(_compound("all", _child("a"), _child("b"), within=10))

    # `b` occurred 1 s after `a` but was processed (and fired) 50 s later.
    assert ev.apply([event("a", 0), event("b", 1, received=50)]) == []
    assert _recorded(ev) == {"trigger.triggers[1]": at(50)}


def test_sequence_requires_declared_order() -> None:
    ev = evaluator(_sequence(_child("a"), _child("b")))
    b_again = event("b", 2)

    assert ev.apply([event("b", 0), event("a", 1)]) == []
    assert _recorded(ev) == {"trigger.triggers[0]": at(1), "trigger.triggers[1]": at(0)}
    [firing] = ev.apply([b_again])

    assert firing.event_id == b_again.id
    assert _recorded(ev) == {}


def test_sequence_simultaneous_firings_count_in_declared_order() -> None:
    ev = evaluator(_sequence(_child("a"), _child("b")))
    a = event("a", 5)

    # `b` is processed first, but at the same time as `a`: declared order decides.
    assert ev.apply([event("b", 5)]) == []
    [firing] = ev.apply([a])

    assert firing.event_id == a.id


def test_sequence_within_forgets_old_child_firings() -> None:
    ev = evaluator(_sequence(_child("a"), _child("b"), within=10))

    assert ev.apply([event("a", 0), event("b", 11)]) == []
    assert len(ev.apply([event("a", 12), event("b", 13)])) == 1


def test_nested_composites() -> None:
    ev = evaluator(
        _sequence(
            _compound("any", _child("a"), _child("b")),
            _compound("all", _child("c"), _child("d")),
        )
    )
    c = event("c", 2)

    assert ev.apply([event("b", 0), event("d", 1)]) == []
    assert _recorded(ev) == {"trigger.triggers[0]": at(0)}
    assert _recorded(ev, "trigger.triggers[1]") == {"trigger.triggers[1].triggers[1]": at(1)}
    [firing] = ev.apply([c])

    assert firing.event_id == c.id
    assert firing.trigger_path == "trigger"
    assert _recorded(ev) == {}
    assert _recorded(ev, "trigger.triggers[1]") == {}


def test_composite_firing_has_no_labels() -> None:
    for_each = {"for_each": ["prefect.resource.id"]}
    any_of = evaluator(_compound("any", _child("a", **for_each)))
    all_of = evaluator(_compound("all", _child("a", **for_each), _child("b", **for_each)))

    [one] = any_of.apply([event("a", 0, "r1")])
    [two] = all_of.apply([event("a", 0, "r1"), event("b", 1, "r2")])

    assert (dict(one.labels), dict(two.labels)) == ({}, {})
    assert one.posture is None and two.posture is None


def test_composite_with_proactive_child_fires_at_advance() -> None:
    ev = evaluator(
        _compound(
            "all",
            {"type": "event", "posture": "Proactive", "expect": ["x"], "within": 10},
            _child("b"),
        )
    )

    ev.advance(at(0), at(0))
    assert ev.apply([event("b", 5)]) == []
    [firing] = ev.advance(at(10), at(11))

    assert firing.event_id is None
    assert firing.fired_at == at(11)
    assert firing.trigger_path == "trigger"
