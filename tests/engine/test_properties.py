"""Property tests: batching, checkpoints and firing bounds hold for any stream."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing, TriggerState

BASE = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NAMES = ["a", "b", "c"]
# Flow-run state events, for metric triggers (the states they read, and one they do not).
FLOW_RUN_STATES = ["Scheduled", "Late", "Running", "Completed", "Failed", "Crashed", "Pending"]
FLOW_RUNS = [f"prefect.flow-run.{n}" for n in range(1, 6)]
# Metric windows are at least 5 minutes: streams for them move this much faster.
METRIC_SCALE = 25.0

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
def metric_triggers(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(["duration", "lateness", "successes"]))
    thresholds = [0, 50, 100] if name == "successes" else [0, 30, 120]
    trigger: dict[str, Any] = {
        "type": "metric",
        "metric": {
            "name": name,
            "operator": draw(st.sampled_from(["<", "<=", ">", ">="])),
            "threshold": draw(st.sampled_from(thresholds)),
            "range": draw(st.sampled_from([300, 600, 900])),
            "firing_for": draw(st.sampled_from([300, 400])),
        },
    }
    if draw(st.booleans()):
        trigger["match"] = {"prefect.resource.id": ["prefect.flow-run.1", "prefect.flow-run.2"]}
    return trigger


@st.composite
def triggers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["event", "event", "metric", "compound", "sequence"]))
    if kind == "event":
        return draw(event_triggers())
    if kind == "metric":
        return draw(metric_triggers())
    child = st.one_of(event_triggers(), event_triggers(), metric_triggers())
    children = draw(st.lists(child, min_size=2, max_size=3))
    trigger: dict[str, Any] = {"type": kind, "triggers": children, "within": 60}
    if kind == "compound":
        trigger["require"] = draw(st.sampled_from(["any", "all", 2]))
    return trigger


@st.composite
def streams(draw: st.DrawFn, scale: float = 1.0) -> list[Op]:
    """Events in arrival order (some late or out of order) with advances between;
    ``scale`` stretches the steps and delays (for minute-long metric windows)."""
    ops: list[Op] = []
    wall = 0.0
    for n in range(draw(st.integers(min_value=1, max_value=40))):
        wall += scale * draw(st.sampled_from([0.0, 1.0, 3.0, 7.0, 15.0]))
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            ops.append(("advance", wall))
            continue
        delay = scale * draw(st.sampled_from([0.0, 0.0, 0.0, 2.0, 12.0]))
        payload: dict[str, Any] = {}
        # Mostly flow-run events on the metric scale, mostly a/b/c otherwise.
        if draw(st.integers(min_value=0, max_value=3)) >= (3 if scale > 1 else 1):
            name = draw(st.sampled_from(NAMES))
            resource = draw(st.sampled_from(["r1", "r2"]))
        else:
            name = "prefect.flow-run." + draw(st.sampled_from(FLOW_RUN_STATES))
            resource = draw(st.sampled_from(FLOW_RUNS))
            if name.endswith("Scheduled") and draw(st.booleans()):
                scheduled = BASE + timedelta(seconds=wall + scale * draw(st.sampled_from([-3, 5])))
                payload = {"validated_state": {"state_details": {"scheduled_time": str(scheduled)}}}
        ops.append(
            (
                "event",
                Event(
                    id=UUID(int=n + 1),
                    occurred=BASE + timedelta(seconds=wall - delay),
                    received=BASE + timedelta(seconds=wall),
                    event=name,
                    resource={"prefect.resource.id": resource},
                    payload=payload,
                ),
            )
        )
    ops.append(("advance", wall + 120.0 * scale))
    return ops


def _has_metric(trigger: dict[str, Any]) -> bool:
    if trigger["type"] == "metric":
        return True
    return any(_has_metric(child) for child in trigger.get("triggers", []))


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], list[Op]]:
    """A trigger and a stream on its time scale."""
    trigger = draw(triggers())
    return trigger, draw(streams(METRIC_SCALE if _has_metric(trigger) else 1.0))


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
    case=cases(),
    batches=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4),
)
def test_any_batching_gives_the_same_firings(
    case: tuple[dict[str, Any], list[Op]], batches: list[int]
) -> None:
    trigger, ops = case
    one_by_one = _run(Evaluator(_automation(trigger)), ops, [1])
    batched = _run(Evaluator(_automation(trigger)), ops, batches)
    assert _signature(batched) == _signature(one_by_one)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), cut=st.integers(min_value=0, max_value=40))
def test_snapshot_and_restore_at_any_point_gives_the_same_firings(
    case: tuple[dict[str, Any], list[Op]], cut: int
) -> None:
    trigger, ops = case
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
@given(case=cases(), cut=st.integers(min_value=0, max_value=40))
def test_resolved_states_change_no_firing_and_survive_restore(
    case: tuple[dict[str, Any], list[Op]], cut: int
) -> None:
    trigger, ops = case
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


@st.composite
def held_triggers(draw: st.DrawFn) -> dict[str, Any]:
    """Proactive triggers with `after`: the ones that hold expect events (SEMANTICS §3.4)."""
    after = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True))
    trigger: dict[str, Any] = {
        "type": "event",
        "posture": "Proactive",
        "after": after,
        "expect": draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True)),
        "threshold": draw(st.integers(min_value=1, max_value=3)),
        "within": draw(st.sampled_from([10, 20, 45])),
    }
    if draw(st.booleans()):
        trigger["for_each"] = ["prefect.resource.id"]
    return trigger


@st.composite
def held_streams(draw: st.DrawFn) -> list[Op]:
    """Streams where expect events often arrive before the `after` event of their
    window, and some are delivered twice."""
    ops = draw(streams())
    events = [op for op in ops if op[0] == "event"]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if events:
            again = draw(st.sampled_from(events))
            ops.insert(draw(st.integers(min_value=0, max_value=len(ops) - 1)), again)
    return ops


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trigger=held_triggers(),
    ops=held_streams(),
    cut=st.integers(min_value=0, max_value=45),
    batches=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4),
)
def test_held_events_survive_snapshot_at_any_point_and_any_batching(
    trigger: dict[str, Any], ops: list[Op], cut: int, batches: list[int]
) -> None:
    uninterrupted = _run(Evaluator(_automation(trigger)), ops, [1])
    assert _signature(_run(Evaluator(_automation(trigger)), ops, batches)) == _signature(
        uninterrupted
    )
    cut = min(cut, len(ops))
    first = Evaluator(_automation(trigger))
    before = _run(first, ops[:cut])
    second = Evaluator(_automation(trigger))
    second.restore(msgpack.unpackb(msgpack.packb(first.snapshot())))
    after = _run(second, ops[cut:])
    assert _signature(before + after) == _signature(uninterrupted)
    assert second.explain().model_dump() == _explained(uninterrupted_state(trigger, ops))


def uninterrupted_state(trigger: dict[str, Any], ops: list[Op]) -> Evaluator:
    evaluator = Evaluator(_automation(trigger))
    _run(evaluator, ops)
    return evaluator


def _explained(evaluator: Evaluator) -> dict[str, Any]:
    return evaluator.explain().model_dump()
