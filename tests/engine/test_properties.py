"""Property tests: batching, checkpoints and firing bounds hold for any stream."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marmot.engine.evaluator import Evaluator
from marmot.engine.firing import Firing, TriggerState
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event

BASE = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NAMES = ["a", "b", "c"]

Op = tuple[str, Any]


@st.composite
def event_triggers(draw: st.DrawFn, *, reactive_only: bool = False) -> dict[str, Any]:
    posture = "Reactive" if reactive_only else draw(st.sampled_from(["Reactive", "Proactive"]))
    within = draw(st.sampled_from([10, 20, 45] if posture == "Proactive" else [0, 5, 20]))
    trigger: dict[str, Any] = {
        "type": "event",
        "posture": posture,
        "expect": draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True)),
        "threshold": draw(st.integers(min_value=1, max_value=3)),
        "within": within,
    }
    if not reactive_only and draw(st.booleans()):
        trigger["after"] = [draw(st.sampled_from(NAMES))]
    if draw(st.booleans()):
        trigger["for_each"] = ["prefect.resource.id"]
    return trigger


@st.composite
def triggers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["event", "event", "compound", "sequence"]))
    if kind == "event":
        return draw(event_triggers())
    children = draw(st.lists(event_triggers(), min_size=2, max_size=3))
    trigger: dict[str, Any] = {"type": kind, "triggers": children, "within": 60}
    if kind == "compound":
        trigger["require"] = draw(st.sampled_from(["any", "all", 2]))
    return trigger


@st.composite
def streams(draw: st.DrawFn) -> list[Op]:
    """Events in arrival order (some late or out of order) with advances between."""
    ops: list[Op] = []
    wall = 0.0
    for n in range(draw(st.integers(min_value=1, max_value=40))):
        wall += draw(st.sampled_from([0.0, 1.0, 3.0, 7.0, 15.0]))
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            ops.append(("advance", wall))
            continue
        delay = draw(st.sampled_from([0.0, 0.0, 0.0, 2.0, 12.0]))
        ops.append(
            (
                "event",
                Event(
                    id=UUID(int=n + 1),
                    occurred=BASE + timedelta(seconds=wall - delay),
                    received=BASE + timedelta(seconds=wall),
                    event=draw(st.sampled_from(NAMES)),
                    resource={"prefect.resource.id": draw(st.sampled_from(["r1", "r2"]))},
                ),
            )
        )
    ops.append(("advance", wall + 120.0))
    return ops


def _automation(trigger: dict[str, Any]) -> Automation:
    return Automation.model_validate(
        {"id": str(UUID(int=7)), "name": "prop", "trigger": trigger, "actions": []}
    )


def _signature(firings: list[Firing]) -> list[tuple[Any, ...]]:
    return [(f.id, dict(f.labels), f.event_id, f.fired_us) for f in firings]


def _stated(firings: list[Firing]) -> list[tuple[Any, ...]]:
    return [(f.state, *row) for f, row in zip(firings, _signature(firings), strict=True)]


def _run(evaluator: Evaluator, ops: list[Op], batches: list[int] | None = None) -> list[Firing]:
    """Apply ``ops``; consecutive events go in batches of the given sizes (cycled)."""
    out: list[Firing] = []
    pending: list[Event] = []
    sizes = iter(batches * 1000 if batches else [])

    def flush() -> None:
        while pending:
            size = next(sizes, len(pending)) or 1
            out.extend(evaluator.apply(pending[:size]))
            del pending[:size]

    for kind, value in ops:
        if kind == "event":
            pending.append(value)
            continue
        flush()
        when = BASE + timedelta(seconds=value)
        out.extend(evaluator.advance(when, when))
    flush()
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trigger=triggers(),
    ops=streams(),
    batches=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4),
)
def test_any_batching_gives_the_same_firings(
    trigger: dict[str, Any], ops: list[Op], batches: list[int]
) -> None:
    one_by_one = _run(Evaluator(_automation(trigger)), ops, [1])
    batched = _run(Evaluator(_automation(trigger)), ops, batches)
    assert _signature(batched) == _signature(one_by_one)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trigger=triggers(), ops=streams(), cut=st.integers(min_value=0, max_value=40))
def test_snapshot_and_restore_at_any_point_gives_the_same_firings(
    trigger: dict[str, Any], ops: list[Op], cut: int
) -> None:
    cut = min(cut, len(ops))
    uninterrupted = _run(Evaluator(_automation(trigger)), ops)
    first = Evaluator(_automation(trigger))
    before = _run(first, ops[:cut])
    packed = msgpack.packb(first.snapshot())
    second = Evaluator(_automation(trigger))
    second.restore(msgpack.unpackb(packed))
    after = _run(second, ops[cut:])
    assert _signature(before + after) == _signature(uninterrupted)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trigger=triggers(), ops=streams(), cut=st.integers(min_value=0, max_value=40))
def test_resolved_states_change_no_firing_and_survive_restore(
    trigger: dict[str, Any], ops: list[Op], cut: int
) -> None:
    plain = _run(Evaluator(_automation(trigger)), ops)
    resolving = _run(Evaluator(_automation(trigger), resolve=True), ops)
    triggered = [f for f in resolving if f.state is TriggerState.Triggered]
    assert _signature(triggered) == _signature(plain)
    # Each key resolves at most once per firing, never before its first one.
    fired: Counter[tuple[Any, ...]] = Counter()
    for firing in resolving:
        key = tuple(sorted(firing.labels.items()))
        if firing.state is TriggerState.Triggered:
            fired[key] += 1
        else:
            assert fired[key] > 0, "resolved before it fired"
            fired[key] -= 1
    cut = min(cut, len(ops))
    first = Evaluator(_automation(trigger), resolve=True)
    before = _run(first, ops[:cut])
    second = Evaluator(_automation(trigger), resolve=True)
    second.restore(msgpack.unpackb(msgpack.packb(first.snapshot())))
    after = _run(second, ops[cut:])
    assert _stated(before + after) == _stated(resolving)


@settings(max_examples=200, deadline=None)
@given(trigger=event_triggers(reactive_only=True), ops=streams())
def test_reactive_trigger_never_fires_more_than_matching_events_over_threshold(
    trigger: dict[str, Any], ops: list[Op]
) -> None:
    automation = _automation(trigger)
    firings = _run(Evaluator(automation), ops)
    matching = sum(1 for kind, e in ops if kind == "event" and e.event in trigger["expect"])
    assert len(firings) <= matching // trigger["threshold"]
