"""Metric triggers (engine/metric.py; docs/semantics.md, "Metric triggers").

Times are on a fake clock: events carry their own ``occurred``; ``simulate``
plays the daemon, calling ``advance`` at every deadline the engine reports
before the next event arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from marmot.engine.interest import InterestIndex
from marmot.engine.models.events import Event
from marmot.engine.models.explain import MetricView
from marmot.engine.models.triggers import (
    CompoundTrigger,
    MetricTrigger,
    MetricTriggerOperator,
    Posture,
    PrefectMetric,
)
from marmot.engine.timestamps import from_us, to_us
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing, TriggerState, firing_id, triggered_event
from marmot.engine.triggers.metric import MetricFiring, MetricMonitor, Phase
from tests.engine.factories import AUTOMATION_ID, at, automation, event


def run_event(
    state: str,
    t: float,
    run: str = "a",
    *,
    payload: Mapping[str, Any] | None = None,
    related: Sequence[Mapping[str, str]] | None = None,
    received: float | None = None,
) -> Event:
    """A ``prefect.flow-run.<state>`` event of flow run ``run`` at ``at(t)``."""
    return event(
        f"prefect.flow-run.{state}",
        t,
        f"prefect.flow-run.{run}",
        related=related,
        received=received,
        payload=payload,
    )


def scheduled_for(t: float) -> dict[str, Any]:
    """The payload of a Scheduled state whose scheduled time is ``at(t)``."""
    return {
        "validated_state": {
            "type": "SCHEDULED",
            "name": "Scheduled",
            "state_details": {"scheduled_time": at(t).isoformat()},
        }
    }


def metric_trigger(name: str, operator: str, threshold: float, **query: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "metric": {"name": name, "operator": operator, "threshold": threshold, **query},
    }


# duration > 60 s over 10 minutes, for 5 minutes: the example most tests use.
SLOW = metric_trigger("duration", ">", 60, range=600)


def engine(trigger: dict[str, Any], *, resolve: bool = False, **kw: Any) -> Evaluator:
    return Evaluator(automation(trigger, **kw), resolve=resolve)


def simulate(ev: Evaluator, events: Sequence[Event], until: float) -> list[Firing]:
    """Apply events in order, advancing to each deadline before the next event (and
    on to ``at(until)``), as the daemon's timer does; firings stamped at the deadline."""
    out: list[Firing] = []

    def run_deadlines(limit: int) -> None:
        while (deadline := ev.next_deadline_us()) is not None and deadline <= limit:
            out.extend(ev.advance(from_us(deadline), from_us(deadline)))

    for item in events:
        run_deadlines(to_us(item.occurred))
        out.extend(ev.apply([item]))
    run_deadlines(to_us(at(until)))
    return out


def view(ev: Evaluator, path: str = "trigger") -> MetricView:
    for trigger in ev.explain().triggers:
        if trigger.path == path and trigger.metric is not None:
            return trigger.metric
    raise KeyError(path)


def finished(run: str, start: float, end: float, state: str = "Completed") -> list[Event]:
    return [run_event("Running", start, run), run_event(state, end, run)]


# -- schema ---------------------------------------------------------------------------


def test_prefect_metric_trigger_json_loads_unchanged() -> None:
    document = {
        "type": "metric",
        "posture": "Metric",
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": [{"prefect.resource.role": "deployment"}],
        "metric": {
            "name": "lateness",
            "threshold": 120.5,
            "operator": ">=",
            "range": 900,
            "firing_for": 600,
        },
    }
    trigger = automation(document).trigger

    assert isinstance(trigger, MetricTrigger)
    assert trigger.posture is Posture.Metric
    assert trigger.metric.name is PrefectMetric.lateness
    assert trigger.metric.operator is MetricTriggerOperator.GTE
    assert trigger.metric.threshold == 120.5
    assert trigger.metric.range == timedelta(seconds=900)
    assert trigger.metric.firing_for == timedelta(seconds=600)
    assert trigger.match.root == {"prefect.resource.id": "prefect.flow-run.*"}
    assert [s.root for s in trigger.related_specs] == [{"prefect.resource.role": "deployment"}]
    # What it writes reads back the same.
    assert MetricTrigger.model_validate_json(trigger.model_dump_json()) == trigger


def test_what_prefects_sdk_writes_loads_as_the_same_trigger() -> None:
    sdk = pytest.importorskip("prefect.events.schemas.automations")
    theirs = sdk.MetricTrigger(
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "deployment"},
        metric=sdk.MetricTriggerQuery(
            name=sdk.PrefectMetric.successes,
            threshold=95,
            operator=sdk.MetricTriggerOperator.LT,
            range=timedelta(minutes=30),
        ),
    )
    ours = automation(theirs.model_dump(mode="json")).trigger
    assert isinstance(ours, MetricTrigger)
    assert ours.metric.name is PrefectMetric.successes
    assert ours.metric.operator is MetricTriggerOperator.LT
    assert (ours.metric.threshold, ours.metric.range) == (95.0, timedelta(minutes=30))
    assert ours.metric.firing_for == timedelta(minutes=5)
    assert ours.related_specs[0].root == {"prefect.resource.role": "deployment"}


def test_durations_take_iso_8601_and_timedelta_and_default_to_five_minutes() -> None:
    iso = automation(metric_trigger("duration", ">", 1, range="PT1H", firing_for="PT10M"))
    assert isinstance(iso.trigger, MetricTrigger)
    assert iso.trigger.metric.range == timedelta(hours=1)
    assert iso.trigger.metric.firing_for == timedelta(minutes=10)

    given = automation(metric_trigger("duration", ">", 1, range=timedelta(minutes=7)))
    assert isinstance(given.trigger, MetricTrigger)
    assert given.trigger.metric.range == timedelta(minutes=7)
    assert given.trigger.metric.firing_for == timedelta(seconds=300)


@pytest.mark.parametrize("field", ["range", "firing_for"])
@pytest.mark.parametrize("value", [299, "PT4M", 0])
def test_windows_under_five_minutes_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match="at least 300 seconds") as caught:
        automation(metric_trigger("duration", ">", 1, **{field: value}))
    assert caught.value.errors()[0]["loc"] == ("trigger", "metric", "metric", field)


def test_unknown_metric_name_is_rejected_with_its_field_path() -> None:
    with pytest.raises(ValidationError) as caught:
        automation(metric_trigger("throughput", ">", 1))
    [error] = caught.value.errors()
    assert error["loc"] == ("trigger", "metric", "metric", "name")
    assert "unknown metric 'throughput'" in error["msg"]
    assert "'duration', 'lateness', 'successes'" in error["msg"]


def test_posture_metric_without_type_makes_a_metric_trigger_at_any_depth() -> None:
    query = {"name": "successes", "operator": "<", "threshold": 90}
    top = automation({"posture": "Metric", "metric": query}).trigger
    assert isinstance(top, MetricTrigger)

    nested = automation(
        {"require": "any", "triggers": [{"posture": "Metric", "metric": query}, {"expect": ["x"]}]}
    ).trigger
    assert isinstance(nested, CompoundTrigger)
    assert isinstance(nested.triggers[0], MetricTrigger)


@pytest.mark.parametrize(
    "extra",
    [{"expect": ["x"]}, {"for_each": ["a"]}, {"within": 10}, {"threshold": 2}, {"after": ["x"]}],
)
def test_a_metric_trigger_takes_no_event_trigger_fields(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        automation({**SLOW, **extra})


def test_postures_belong_to_their_trigger_kinds() -> None:
    with pytest.raises(ValidationError, match="posture is 'Metric', not 'Reactive'"):
        automation({**SLOW, "posture": "Reactive"})
    with pytest.raises(ValidationError, match="belongs to metric triggers"):
        automation({"type": "event", "posture": "Metric", "expect": ["x"]})


def test_a_missing_query_or_operator_is_an_error() -> None:
    with pytest.raises(ValidationError, match="metric\n  Field required"):
        automation({"type": "metric"})
    with pytest.raises(ValidationError, match="operator"):
        automation({"type": "metric", "metric": {"name": "duration", "threshold": 1}})
    with pytest.raises(ValidationError, match="operator"):
        automation(metric_trigger("duration", "==", 1))


# -- what each metric computes --------------------------------------------------------------


def test_duration_is_the_mean_of_runs_ending_in_the_window() -> None:
    ev = engine(metric_trigger("duration", ">", 1000))
    ev.apply(
        [
            *finished("a", 0, 100),  # 100 s
            *finished("b", 10, 40, "Failed"),  # 30 s: every final state counts
            run_event("Completed", 50, "c"),  # never seen running: skipped
            run_event("Running", 60, "d"),  # not ended: not yet
        ]
    )
    metric = view(ev)
    assert metric.value == 65.0
    assert metric.samples == 2
    assert metric.tracked_runs == 4


def test_duration_takes_the_earliest_running_and_the_earliest_end() -> None:
    ev = engine(metric_trigger("duration", ">", 1000))
    ev.apply(
        [
            run_event("Running", 30, "a"),
            run_event("Running", 10, "a"),  # arrived late, happened first: the start
            run_event("Running", 50, "a"),  # resumed after a pause: not the start
            run_event("Completed", 100, "a"),
            run_event("Failed", 120, "a"),  # a second end is nothing new
        ]
    )
    assert view(ev).value == 90.0


LATENESS_CASES = {
    "from the payload's scheduled_time": (
        [run_event("Scheduled", 0, payload=scheduled_for(30)), run_event("Running", 100)],
        70.0,
    ),
    "from the Scheduled event's time": (
        [run_event("Scheduled", 0), run_event("Running", 50)],
        50.0,
    ),
    "an unreadable scheduled_time falls back": (
        [
            run_event("Scheduled", 0, payload={"validated_state": {"state_details": {"x": 1}}}),
            run_event("Scheduled", 5, payload=scheduled_for(0) | {"validated_state": "odd"}),
            run_event(
                "Late",
                10,
                payload={"validated_state": {"state_details": {"scheduled_time": "soon"}}},
            ),
            run_event("Running", 50),
        ],
        40.0,
    ),
    "a later Late event replaces a Scheduled fallback": (
        [run_event("Scheduled", 0), run_event("Late", 20), run_event("Running", 50)],
        30.0,
    ),
    "a payload time beats a later fallback": (
        [
            run_event("Scheduled", 0, payload=scheduled_for(10)),
            run_event("Late", 25),
            run_event("Running", 40),
        ],
        30.0,
    ),
    "starting early is not late": (
        [run_event("Scheduled", 0, payload=scheduled_for(200)), run_event("Running", 100)],
        0.0,
    ),
    "a run with no scheduled time is skipped": ([run_event("Running", 100)], None),
    "rescheduling after the start is a re-run, not lateness": (
        [
            run_event("Scheduled", 0),
            run_event("Running", 30),
            run_event("Completed", 60),
            run_event("Scheduled", 90, payload=scheduled_for(120)),
        ],
        30.0,
    ),
}


@pytest.mark.parametrize("case", LATENESS_CASES)
def test_lateness_is_start_minus_scheduled_time(case: str) -> None:
    events, expected = LATENESS_CASES[case]
    ev = engine(metric_trigger("lateness", ">", 1000))
    ev.apply(events)
    assert view(ev).value == expected


def test_lateness_is_the_mean_over_runs_started_in_the_window() -> None:
    ev = engine(metric_trigger("lateness", ">", 1000))
    ev.apply(
        [
            run_event("Scheduled", 0, "a"),
            run_event("Running", 30, "a"),  # 30 s late
            run_event("Scheduled", 0, "b", payload=scheduled_for(40)),
            run_event("Running", 130, "b"),  # 90 s late
            run_event("Scheduled", 0, "c"),  # not started: no sample yet
            run_event("Completed", 200, "a"),  # ends do not matter to lateness
        ]
    )
    metric = view(ev)
    assert (metric.value, metric.samples) == (60.0, 2)


def test_successes_is_the_percentage_of_runs_ending_completed() -> None:
    ev = engine(metric_trigger("successes", "<", 0))
    ev.apply(
        [
            run_event("Completed", 10, "a"),
            run_event("Failed", 20, "b"),
            run_event("Crashed", 30, "c"),
            run_event("Running", 35, "f"),  # running runs have not ended
            run_event("Completed", 40, "d"),
            run_event("Cancelled", 50, "e"),
            run_event("Failed", 60, "a"),  # a's first end was Completed
        ]
    )
    metric = view(ev)
    assert metric.value == 40.0
    assert metric.samples == 5


@pytest.mark.parametrize(
    ("operator", "threshold", "breaching"),
    [
        (">", 100, False),
        (">=", 100, True),
        ("<", 100, False),
        ("<=", 100, True),
        ("<", 100.5, True),
        (">", 99.5, True),
    ],
)
def test_operators_compare_the_value_with_the_threshold(
    operator: str, threshold: float, breaching: bool
) -> None:
    ev = engine(metric_trigger("duration", operator, threshold))
    ev.apply(finished("a", 0, 100))
    assert view(ev).state == ("pending" if breaching else "ok")


def test_no_run_in_the_window_is_no_value_and_never_breaches() -> None:
    ev = engine(metric_trigger("successes", "<", 50))
    ev.apply([run_event("Running", 0, "a"), run_event("Pending", 5, "b")])
    assert view(ev).value is None
    assert ev.next_deadline() is None
    assert ev.advance(at(10_000), at(10_000)) == []
    assert view(ev).state == "ok"


# -- the window -------------------------------------------------------------------------------


def test_a_sample_leaves_the_window_at_its_time_plus_range() -> None:
    ev = engine(metric_trigger("duration", ">", 1000))  # range: 300 s
    ev.apply(finished("a", 0, 100))
    assert ev.next_deadline() == at(400)
    assert ev.advance(at(399), at(399)) == []
    assert view(ev).value == 100.0
    ev.advance(at(400), at(400))
    assert (view(ev).value, view(ev).tracked_runs) == (None, 0)
    assert ev.next_deadline() is None


def test_the_value_changes_as_each_sample_leaves() -> None:
    ev = engine(metric_trigger("duration", ">", 1000, range=600))
    ev.apply([*finished("a", 0, 100), *finished("b", 100, 400)])  # 100 s and 300 s
    assert view(ev).value == 200.0
    assert ev.next_deadline() == at(700)
    ev.advance(at(700), at(700))
    assert view(ev).value == 300.0
    assert ev.next_deadline() == at(1000)


# -- breaching, firing and recovering ------------------------------------------------------


def test_fires_exactly_firing_for_after_the_breach_began() -> None:
    ev = engine(SLOW)
    completed = run_event("Completed", 100, "a")
    assert ev.apply([run_event("Running", 0, "a"), completed]) == []
    metric = view(ev)
    assert (metric.state, metric.since) == ("pending", at(100))
    assert ev.next_deadline() == at(400)
    assert ev.advance(at(399), at(399)) == []

    [fired] = ev.advance(at(400), at(401))
    assert fired.state is TriggerState.Triggered
    assert fired.posture is Posture.Metric
    assert fired.labels == {}
    assert fired.triggering_event == completed
    assert fired.fired_us == to_us(at(401))
    assert fired.deadline_us == to_us(at(400))
    assert fired.id == firing_id(AUTOMATION_ID, "trigger", "metric", to_us(at(100)), to_us(at(400)))
    assert (view(ev).state, view(ev).since) == ("fired", at(400))


def test_the_triggered_event_says_posture_metric() -> None:
    auto = automation(SLOW, name="slow runs")
    ev = Evaluator(auto)
    [fired] = simulate(ev, finished("a", 0, 100), until=500)
    emitted = triggered_event(auto, fired)
    assert emitted.event == "prefect.automation.triggered"
    assert emitted.resource["prefect.posture"] == "Metric"
    assert emitted.payload["triggering_labels"] == {}


def test_a_breach_interrupted_before_firing_for_does_not_fire() -> None:
    ev = engine(SLOW)
    events = [
        *finished("a", 0, 100),  # 100 s: breaching from 100
        *finished("b", 150, 160),  # mean 55 s at 160: back to ok
    ]
    assert simulate(ev, events, until=5000) == []
    assert view(ev).state == "ok"


def test_a_new_breach_starts_its_own_firing_for() -> None:
    ev = engine(SLOW)
    events = [
        *finished("a", 0, 100),
        *finished("b", 150, 160),  # ok at 160
        *finished("c", 170, 300),  # mean 80 s: breaching again from 300
    ]
    [fired] = simulate(ev, events, until=5000)
    assert fired.deadline_us == to_us(at(600))


def test_no_second_firing_while_it_keeps_breaching() -> None:
    ev = engine(SLOW)
    events = [*finished("a", 0, 100), *finished("b", 500, 650)]
    # a leaves at 700, b keeps it breaching until it leaves at 1250.
    fired = simulate(ev, events, until=1249)
    assert [f.deadline_us for f in fired] == [to_us(at(400))]
    assert view(ev).state == "fired"


def test_breaching_again_while_recovering_is_the_same_firing() -> None:
    ev = engine(SLOW, resolve=True)
    events = [
        *finished("a", 0, 100),  # fires at 400; leaves at 700: recovering
        *finished("d", 800, 900),  # breaching again at 900, before 1000
    ]
    out = simulate(ev, events, until=1499)
    assert [(f.state, f.deadline_us) for f in out] == [(TriggerState.Triggered, to_us(at(400)))]
    assert (view(ev).state, view(ev).since) == ("fired", at(400))


def test_re_arms_after_firing_for_without_breaching() -> None:
    ev = engine(SLOW)
    events = [
        *finished("a", 0, 100),  # fires at 400, recovering from 700
        *finished("d", 800, 900),  # breaching again at 900: still the first firing
        # d leaves at 1500: recovering, ok at 1800
        *finished("e", 1800, 1900),  # a new breach from 1900
    ]
    out = simulate(ev, events, until=3000)
    assert [f.deadline_us for f in out] == [to_us(at(400)), to_us(at(2200))]
    assert len({f.id for f in out}) == 2


def test_recovery_is_a_resolved_firing_with_resolution_on() -> None:
    ev = engine(SLOW, resolve=True)
    completed = run_event("Completed", 100, "a")
    out = simulate(ev, [run_event("Running", 0, "a"), completed], until=999)
    assert [f.state for f in out] == [TriggerState.Triggered]
    assert (view(ev).state, view(ev).since) == ("recovering", at(700))
    assert ev.next_deadline() == at(1000)

    [resolved] = ev.advance(at(1000), at(1002))
    assert resolved.state is TriggerState.Resolved
    assert resolved.posture is Posture.Metric
    assert resolved.labels == {}
    assert resolved.triggering_event == completed
    assert resolved.fired_us == to_us(at(1002))
    assert resolved.id != out[0].id
    assert view(ev).state == "ok"
    assert ev.next_deadline() is None


def test_recovery_resolves_nothing_with_resolution_off() -> None:
    out = simulate(engine(SLOW), finished("a", 0, 100), until=5000)
    assert [f.state for f in out] == [TriggerState.Triggered]


def test_changes_due_before_an_event_are_caught_up_at_their_own_time() -> None:
    events = [*finished("a", 0, 100), run_event("Running", 1000, "z")]
    on_time = simulate(engine(SLOW), events, until=1000)
    # No advance at all: the event at 1000 first processes what was due.
    caught_up = engine(SLOW).apply(events)
    assert [(f.id, f.deadline_us) for f in caught_up] == [(f.id, f.deadline_us) for f in on_time]
    assert caught_up[0].fired_us == to_us(at(1000))  # processed then
    assert on_time[0].fired_us == to_us(at(400))


def test_an_event_older_than_the_clock_counts_from_the_clock() -> None:
    ev = engine(SLOW)
    assert ev.advance(at(500), at(500)) == []
    # The run happened before 500 but is only seen now: the breach begins at 500.
    ev.apply(finished("a", 0, 450))
    assert (view(ev).state, view(ev).since) == ("pending", at(500))
    [fired] = ev.advance(at(800), at(800))
    assert fired.deadline_us == to_us(at(800))


def test_a_sample_leaving_at_the_end_of_firing_for_stops_the_firing() -> None:
    # range == firing_for: the only sample leaves as firing_for ends; samples
    # are dropped before the phase is decided, so it never fires.
    ev = engine(metric_trigger("duration", ">", 60))
    assert simulate(ev, finished("a", 0, 100), until=5000) == []


# -- where a metric trigger sits -----------------------------------------------------------


def test_a_metric_trigger_is_a_child_of_a_compound_trigger() -> None:
    ev = engine(
        {
            "type": "compound",
            "require": "all",
            "triggers": [SLOW, {"type": "event", "expect": ["deploy.done"]}],
        },
        resolve=True,
    )
    completed = run_event("Completed", 100, "a")
    events = [run_event("Running", 0, "a"), event("deploy.done", 50, "d"), completed]
    [fired] = simulate(ev, events, until=5000)  # no Resolved: only top-level triggers resolve
    assert fired.trigger_path == "trigger"
    assert fired.labels == {}
    assert fired.triggering_event == completed
    assert len(fired.child_ids) == 2
    assert fired.deadline_us == to_us(at(400))


def test_a_metric_trigger_is_a_step_of_a_sequence() -> None:
    ev = engine(
        {"type": "sequence", "triggers": [{"type": "event", "expect": ["deploy.done"]}, SLOW]}
    )
    assert simulate(ev, finished("a", 0, 100), until=5000) == []  # the deploy never came
    ev = engine(
        {"type": "sequence", "triggers": [{"type": "event", "expect": ["deploy.done"]}, SLOW]}
    )
    events = [event("deploy.done", 0, "d"), *finished("a", 0, 100)]
    assert len(simulate(ev, events, until=5000)) == 1


def test_match_and_match_related_choose_the_runs() -> None:
    etl = {"prefect.resource.id": "prefect.deployment.etl", "prefect.resource.role": "deployment"}
    other = {**etl, "prefect.resource.id": "prefect.deployment.other"}
    trigger = {
        **metric_trigger("successes", "<", 50),
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": {"prefect.resource.id": "prefect.deployment.etl"},
    }
    ev = engine(trigger)
    stream = [
        run_event("Completed", 10, "a", related=[etl]),
        run_event("Failed", 20, "b", related=[other]),  # another deployment's run
        event("prefect.task-run.Failed", 30, "prefect.task-run.t", related=[etl]),
        event("prefect.flow-run.Failed", 40, "prefect.not-a-run.x", related=[etl]),
    ]
    ev.apply(stream)
    assert (view(ev).value, view(ev).samples) == (100.0, 1)

    # The interest index routes exactly the events the trigger looks at.
    index: InterestIndex[str] = InterestIndex()
    index.set("metric", ev.matchers)
    assert [bool(index.route(e)) for e in stream] == [True, False, False, False]
    assert all(ev.is_interested(e) == bool(index.route(e)) for e in stream)


# -- state -----------------------------------------------------------------------------------


def test_snapshot_and_restore_mid_breach_fire_the_same() -> None:
    uninterrupted = simulate(engine(SLOW), finished("a", 0, 100), until=5000)

    first = engine(SLOW)
    first.apply(finished("a", 0, 100))
    second = engine(SLOW)
    second.restore(msgpack.unpackb(msgpack.packb(first.snapshot())))
    assert view(second) == view(first)
    assert second.next_deadline() == at(400)
    assert simulate(second, [], until=5000) == uninterrupted


def test_snapshot_and_restore_mid_recovery_resolve_the_same() -> None:
    events = [
        run_event("Running", 0, "a"),
        *finished("b", 20, 50),  # 30 s: not breaching alone
        run_event("Completed", 100, "a"),  # mean 65 s: breaching from 100
    ]
    uninterrupted = simulate(engine(SLOW, resolve=True), events, until=5000)
    assert [f.state for f in uninterrupted] == [TriggerState.Triggered, TriggerState.Resolved]

    first = engine(SLOW, resolve=True)
    before = simulate(first, events, until=800)
    assert view(first).state == "recovering"
    second = engine(SLOW, resolve=True)
    second.restore(msgpack.unpackb(msgpack.packb(first.snapshot())))
    assert before + simulate(second, [], until=5000) == uninterrupted


def test_the_clock_survives_a_restore() -> None:
    first = engine(SLOW)
    first.advance(at(500), at(500))
    second = engine(SLOW)
    second.restore(msgpack.unpackb(msgpack.packb(first.snapshot())))
    # Seen after the restore, a run from before 500 still counts from 500 on.
    second.apply(finished("a", 0, 450))
    assert (view(second).state, view(second).since) == ("pending", at(500))


def test_explain_shows_the_query_value_and_state() -> None:
    ev = engine(SLOW)
    ev.apply([*finished("a", 0, 100), run_event("Running", 120, "b")])
    explanation = ev.explain()
    [trigger] = explanation.triggers
    assert (trigger.type, trigger.posture, trigger.buckets) == ("metric", "Metric", [])
    assert trigger.metric == MetricView(
        name="duration",
        operator=">",
        threshold=60.0,
        range_s=600.0,
        firing_for_s=300.0,
        value=100.0,
        samples=1,
        tracked_runs=2,
        state="pending",
        since=at(100),
    )
    assert explanation.next_deadline == at(400)
    assert explanation.open_buckets == 0


# -- memory ----------------------------------------------------------------------------------


def test_runs_are_forgotten_once_their_sample_has_left_the_window() -> None:
    ev = engine(metric_trigger("successes", "<", 0))
    ev.apply([run_event("Completed", t, f"r{t}") for t in range(0, 100, 10)])
    assert view(ev).tracked_runs == 10
    ev.advance(at(350), at(350))
    assert view(ev).tracked_runs == 4  # those that ended after 350 - range

    ev.advance(at(400), at(400))
    assert view(ev).tracked_runs == 0


def test_runs_without_a_sample_are_forgotten_too() -> None:
    duration = engine(metric_trigger("duration", ">", 1))
    duration.apply([run_event("Completed", 0, "never-started")])
    assert view(duration).tracked_runs == 1  # a late Running could still complete it
    duration.advance(at(300), at(300))
    assert view(duration).tracked_runs == 0

    lateness = engine(metric_trigger("lateness", ">", 1))
    lateness.apply([run_event("Scheduled", 0, "a"), run_event("Cancelled", 10, "a")])
    assert view(lateness).tracked_runs == 0  # it ended without starting


def names(monitor: MetricMonitor) -> list[str]:
    return [run_id.removeprefix("prefect.flow-run.") for run_id in monitor.runs]


def test_tracked_runs_are_capped_least_recently_updated_first() -> None:
    fired: list[MetricFiring] = []
    trigger = automation(metric_trigger("duration", ">", 1000)).trigger
    assert isinstance(trigger, MetricTrigger)
    monitor = MetricMonitor(trigger, fired.append, max_runs=3)

    def feed(item: Event) -> None:
        monitor.on_event(item, to_us(item.occurred), to_us(item.occurred))

    for name, t in [("a", 0), ("b", 1), ("c", 2)]:
        feed(run_event("Running", t, name))
    feed(run_event("Completed", 10, "a"))  # a is the most recently updated now
    feed(run_event("Running", 11, "d"))  # over the cap: b goes
    assert names(monitor) == ["c", "a", "d"]
    assert monitor.samples == 1
    feed(run_event("Running", 12, "e"))
    feed(run_event("Running", 13, "f"))  # c, then a (and its sample) go
    assert names(monitor) == ["d", "e", "f"]
    assert (monitor.samples, monitor.value(), monitor.phase) == (0, None, Phase.ok)
    assert fired == []
