"""Messages between the daemon and its actors round-trip exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from marmot.actors.wire import (
    Batch,
    Outcome,
    event_from_wire,
    event_to_wire,
    pack,
    pack_batch,
    pack_event,
    pack_events,
    unpack,
    unpack_event,
)
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.models.triggers import Posture
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing, TriggerState


def _event(**extra: object) -> Event:
    return Event.model_validate(
        {
            "occurred": "2026-03-01T09:00:00.123456Z",
            "event": "prefect.flow-run.Failed",
            "resource": {"prefect.resource.id": "prefect.flow-run.1", "team": "a"},
            "related": [{"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"}],
            "payload": {"nested": {"n": [1, 2.5, None, "x"]}},
            "received": "2026-03-01T09:00:01Z",
            **extra,
        }
    )


def test_event_round_trips_without_revalidation() -> None:
    event = _event(follows=str(uuid4()))
    back = event_from_wire(unpack(pack(event_to_wire(event))))
    assert back == event
    assert back.model_dump(mode="json") == event.model_dump(mode="json")
    assert back.occurred.tzinfo is not None and back.find_label("team") == "a"


def test_packed_event_round_trips_with_ids_as_bytes() -> None:
    event = _event(follows=str(uuid4()))
    back = unpack_event(pack_event(event))
    assert back == event and back.follows == event.follows
    assert str(back.id) == str(event.id) and hash(back.id) == hash(event.id)


def test_a_batch_of_packed_events_reads_as_a_batch() -> None:
    events = [_event(), _event(follows=str(uuid4()))]
    packed = [pack_event(e) for e in events]
    blob = pack_batch([(1, ["a"], packed[0]), (2, ["a", "b"], packed[1])])
    assert Batch.unpack(blob) == [(1, ["a"], events[0]), (2, ["a", "b"], events[1])]
    assert blob == Batch([(1, ["a"], events[0]), (2, ["a", "b"], events[1])]).pack()
    many = [(k, ["a"], pack_event(events[0])) for k in range(70_000)]  # a 32-bit header
    assert len(Batch.unpack(pack_batch(many))) == 70_000


def test_batch_keeps_order_sequence_numbers_and_targets() -> None:
    events = [_event(), _event()]
    rows = Batch([(7, ["a1"], events[0]), (8, ["a1", "a2"], events[1])]).pack()
    assert [(seq, targets, e) for seq, targets, e in Batch.unpack(rows)] == [
        (7, ["a1"], events[0]),
        (8, ["a1", "a2"], events[1]),
    ]


def test_outcome_round_trips_firings_and_deadlines() -> None:
    event = _event()
    firing = Firing(
        id=uuid4(),
        automation_id=uuid4(),
        trigger_path="trigger",
        labels={"prefect.resource.id": "prefect.flow-run.1"},
        triggering_event=event,
        fired_us=1_772_355_600_000_000,
        posture=Posture.Proactive,
    )
    outcome = Outcome.unpack(Outcome([firing], {"a1": 5, "a2": None}, 9, 3).pack())
    assert outcome.firings == [firing]
    assert outcome.deadlines == {"a1": 5, "a2": None}
    assert (outcome.applied_seq, outcome.evaluated) == (9, 3)
    assert outcome.firings[0].fired_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_a_resolved_firing_keeps_its_state_on_the_wire() -> None:
    firing = Firing(
        id=uuid4(),
        automation_id=uuid4(),
        trigger_path="trigger",
        labels={},
        triggering_event=_event(),
        fired_us=1_772_355_600_000_000,
        posture=Posture.Reactive,
        state=TriggerState.Resolved,
    )
    [back] = Outcome.unpack(Outcome([firing], {}, 1, 1).pack()).firings
    assert back.state is TriggerState.Resolved
    assert back == firing


def test_a_metric_firing_round_trips_with_its_posture_and_deadline() -> None:
    automation = Automation.model_validate(
        {
            "name": "slow runs",
            "trigger": {
                "posture": "Metric",
                "metric": {"name": "duration", "operator": ">", "threshold": 60, "range": 600},
            },
        }
    )
    engine = Evaluator(automation, resolve=True)
    engine.apply(
        [
            _event(event="prefect.flow-run.Running", occurred="2026-03-01T09:00:00Z"),
            _event(event="prefect.flow-run.Completed", occurred="2026-03-01T09:01:40Z"),
        ]
    )
    [firing] = engine.advance(datetime(2026, 3, 1, 9, 6, 40, tzinfo=UTC), datetime.now(UTC))
    [resolved] = engine.advance(datetime(2026, 3, 1, 9, 20, tzinfo=UTC), datetime.now(UTC))
    assert (firing.state, resolved.state) == (TriggerState.Triggered, TriggerState.Resolved)
    for original in (firing, resolved):
        [back] = Outcome.unpack(Outcome([original], {}, 1, 1).pack()).firings
        assert back == original
        assert back.posture is Posture.Metric
        assert back.deadline_us is not None


def test_a_pack_that_fails_leaves_the_thread_packer_clean() -> None:
    # The packer is kept per thread: a value it cannot pack must not leave
    # half a message in its buffer for the next pack.
    good = [1, "two", {"three": 3.0}]
    expected = pack(good)
    with pytest.raises(TypeError):
        pack(["partly packed", object()])
    assert pack(good) == expected
    assert unpack(pack(good)) == good


def test_events_packed_together_are_the_bytes_packed_one_by_one() -> None:
    events = [
        _event(),
        _event(follows=str(uuid4()), received=None),
        _event(payload={}, related=[]),
    ]
    bodies = pack_events(events)
    assert bodies == [pack_event(event) for event in events]
    assert [unpack_event(body) for body in bodies] == events
    assert pack_events([]) == []
