"""SEMANTICS §5 and §7: what a firing emits, firing ids, enabling, state, and replay."""

from __future__ import annotations

from uuid import NAMESPACE_DNS, UUID, uuid5

import pytest

from marmot.engine.errors import ValidationFailed
from marmot.engine.models.events import Event
from marmot.engine.replay import Replay
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import FIRING_NAMESPACE, name_uuid, triggered_event
from tests.engine.factories import AUTOMATION_ID, at, automation, buckets, evaluator, event

OTHER_ID = UUID("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
REACTIVE = {"type": "event", "expect": ["x"], "threshold": 2, "within": 60}


def test_triggered_event_shape() -> None:
    auto = automation(
        {"type": "event", "expect": ["x"], "for_each": ["prefect.resource.id"]}, name="woodchonk"
    )
    source = event("x", 3, "r1", labels={"env": "prod"}, received=4)
    [firing] = Evaluator(auto).apply([source])

    emitted = triggered_event(auto, firing)

    assert emitted.event == "prefect.automation.triggered"
    assert emitted.resource == {
        "prefect.resource.id": f"prefect.automation.{AUTOMATION_ID}",
        "prefect.resource.name": "woodchonk",
        "prefect.posture": "Reactive",
    }
    assert emitted.related == [
        {
            "prefect.resource.id": f"prefect.event.{source.id}",
            "prefect.resource.role": "triggering-event",
        }
    ]
    assert emitted.payload["triggering_labels"] == {"prefect.resource.id": "r1"}
    assert emitted.payload["triggering_event"]["id"] == str(source.id)
    assert emitted.payload["triggering_event"]["event"] == "x"
    assert emitted.payload["triggering_event"]["resource"] == source.resource
    assert emitted.occurred == at(4)
    # Built without validation: it must still be exactly what validation accepts,
    # and behave as a model (a late firing's event is a copy with a new payload).
    assert Event.model_validate(emitted.model_dump()) == emitted
    late = emitted.model_copy(update={"payload": {**emitted.payload, "late_by_seconds": 2.0}})
    assert late.payload["late_by_seconds"] == 2.0 and "late_by_seconds" not in emitted.payload
    assert emitted.id == uuid5(FIRING_NAMESPACE, f"event|{firing.id}")


def test_name_uuid_is_uuid5() -> None:
    """Firing and event ids are kept in the action log: the fast path must give
    exactly the ids uuid5 gave."""
    for name in ("", "event|x", "action|1|0|executed", "ü" * 300, "\x00|\U0001f600"):
        for namespace in (FIRING_NAMESPACE, NAMESPACE_DNS, UUID(int=0), UUID(int=(1 << 128) - 1)):
            assert name_uuid(namespace, name) == uuid5(namespace, name)


def test_triggered_event_of_proactive_firing_names_its_posture() -> None:
    auto = automation({"type": "event", "posture": "Proactive", "expect": ["x"]})
    ev = Evaluator(auto)
    ev.advance(at(0), at(0))
    [firing] = ev.advance(at(10), at(10))

    emitted = triggered_event(auto, firing)

    assert emitted.resource["prefect.posture"] == "Proactive"
    # No event fell in the window, so there is no triggering event to relate.
    assert emitted.related == []
    assert emitted.payload == {"triggering_labels": {}, "triggering_event": None}


def test_triggered_event_of_composite_has_no_posture() -> None:
    auto = automation({"type": "compound", "require": "any", "triggers": [{"expect": ["x"]}]})
    source = event("x", 0)
    [firing] = Evaluator(auto).apply([source])

    emitted = triggered_event(auto, firing)

    assert "prefect.posture" not in emitted.resource
    assert emitted.related[0]["prefect.resource.id"] == f"prefect.event.{source.id}"
    assert emitted.payload["triggering_labels"] == {}


def test_firing_ids_are_deterministic() -> None:
    stream = [event("x", 0), event("x", 1), event("x", 61), event("x", 62)]
    auto = automation(REACTIVE)

    first = Evaluator(auto).apply(stream)
    again = Evaluator(auto).apply(stream)

    assert len(first) == 2
    assert [f.id for f in first] == [f.id for f in again]
    assert first[0].id != first[1].id
    assert triggered_event(auto, first[0]).id == triggered_event(auto, again[0]).id
    other_event = Evaluator(auto).apply([event("x", 0), event("x", 1, "r-other")])
    assert other_event[0].id != first[0].id


def test_firing_ids_differ_between_automations() -> None:
    stream = [event("x", 0), event("x", 1)]

    [mine] = evaluator(REACTIVE).apply(stream)
    [theirs] = evaluator(REACTIVE, id=str(OTHER_ID)).apply(stream)

    assert mine.id != theirs.id


def test_disabled_automation_is_not_evaluated() -> None:
    reactive = evaluator({"type": "event", "expect": ["x"]}, enabled=False)
    proactive = evaluator({"type": "event", "posture": "Proactive", "expect": ["x"]}, enabled=False)

    assert reactive.apply([event("x", 0)]) == []
    assert buckets(reactive) == []
    assert proactive.next_deadline() is None
    assert proactive.advance(at(0), at(0)) == []
    assert proactive.advance(at(60), at(60)) == []
    assert proactive.explain().open_buckets == 0
    assert proactive.explain().enabled is False


def test_reset_forgets_all_state() -> None:
    ev = evaluator(
        {
            "type": "compound",
            "require": "all",
            "triggers": [{"expect": ["a"]}, {"expect": ["b"], "threshold": 2, "within": 60}],
        }
    )
    ev.apply([event("a", 0), event("b", 1)])
    assert ev.explain().open_buckets == 1

    ev.reset()

    assert ev.explain().open_buckets == 0
    assert all(not v.recorded_children for v in ev.explain().triggers)
    # `a` was forgotten, so completing `b` alone does not fire the compound.
    assert ev.apply([event("b", 2), event("b", 3)]) == []


def test_snapshot_and_restore_carry_the_state() -> None:
    auto = automation(REACTIVE)
    before = Evaluator(auto)
    before.apply([event("x", 0)])

    after = Evaluator(auto)
    after.restore(before.snapshot())
    [firing] = after.apply([event("x", 1)])

    assert firing.event_id == event("x", 1).id
    with pytest.raises(ValidationFailed, match="another automation"):
        evaluator(REACTIVE, id=str(OTHER_ID)).restore(before.snapshot())


def test_next_deadline_is_none_without_pending_work() -> None:
    assert evaluator(REACTIVE).next_deadline() is None


def test_top_level_firing_only_is_returned() -> None:
    ev = evaluator({"type": "sequence", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]})

    assert ev.apply([event("a", 0)]) == []
    [firing] = ev.apply([event("b", 1)])

    assert firing.trigger_path == "trigger"
    assert len(firing.child_ids) == 2


# -- §7: replay ---------------------------------------------------------------------------------


def test_replay_runs_proactive_evaluation_at_ticks() -> None:
    auto = automation({"type": "event", "posture": "Proactive", "expect": ["x"], "within": 10})

    ticked = Replay([auto], start=at(0), tick=3).run([], until=at(12))
    deadline = Replay([auto], start=at(0), tick=0).run([], until=at(12))

    assert [r.firing.fired_at for r in ticked] == [at(12)]
    assert [r.firing.fired_at for r in deadline] == [at(10)]


def test_replay_output_is_sorted_by_fired_at_automation_and_labels() -> None:
    per_resource = automation(
        {"type": "event", "expect": ["x"], "for_each": ["prefect.resource.id"]}, name="b-auto"
    )
    any_resource = automation({"type": "event", "expect": ["x"]}, name="a-auto", id=str(OTHER_ID))
    # Arrival order; the clock never goes back, and output is sorted, not in arrival order.
    stream = [event("x", 5, "r2", received=6), event("x", 7, "r2"), event("x", 7, "r1")]

    replay = Replay([per_resource, any_resource], start=at(0), tick=1)
    lines = [r.line() for r in replay.run(stream, until=at(10))]

    assert [(line["fired_at"], line["automation"], line["labels"]) for line in lines] == [
        ("2026-03-01T09:00:06Z", "a-auto", {}),
        ("2026-03-01T09:00:06Z", "b-auto", {"prefect.resource.id": "r2"}),
        ("2026-03-01T09:00:07Z", "a-auto", {}),
        ("2026-03-01T09:00:07Z", "a-auto", {}),
        ("2026-03-01T09:00:07Z", "b-auto", {"prefect.resource.id": "r1"}),
        ("2026-03-01T09:00:07Z", "b-auto", {"prefect.resource.id": "r2"}),
    ]
    assert lines[0]["state"] == "Triggered"
    assert lines[0]["event_id"] == str(stream[0].id)
