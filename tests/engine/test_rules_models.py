"""Validation rules of SEMANTICS §1 (events), §3-4 (triggers) and §5 (loop guard)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from marmot.engine.models.events import OCCURRED_END, OCCURRED_START, Event, EventLimits
from marmot.engine.models.triggers import (
    MAX_TRIGGER_DEPTH,
    MAX_WITHIN,
    CompoundTrigger,
    EventTrigger,
    Posture,
    SequenceTrigger,
)
from tests.engine.factories import at, automation

DEPLOYMENT_ID = "3c1e5a7b-9d2f-4e6a-8b0c-1d3f5a7b9c2e"


def _event_doc(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "occurred": "2026-03-01T09:00:00Z",
        "event": "x",
        "resource": {"prefect.resource.id": "r"},
    }
    doc.update(fields)
    return doc


def _labels(n: int) -> dict[str, str]:
    labels = {f"label.{i}": "v" for i in range(n - 1)}
    labels["prefect.resource.id"] = "r"
    return labels


def _related(n: int) -> list[dict[str, str]]:
    return [
        {"prefect.resource.id": f"prefect.tag.{i}", "prefect.resource.role": "tag"}
        for i in range(n)
    ]


# -- §1: events ---------------------------------------------------------------------------


def test_event_requires_resource_id() -> None:
    with pytest.raises(ValidationError, match=r"prefect\.resource\.id"):
        Event.model_validate(_event_doc(resource={"env": "prod"}))
    with pytest.raises(ValidationError, match=r"prefect\.resource\.id"):
        Event.model_validate(_event_doc(resource={"prefect.resource.id": ""}))


def test_related_requires_role() -> None:
    with pytest.raises(ValidationError, match=r"prefect\.resource\.role"):
        Event.model_validate(_event_doc(related=[{"prefect.resource.id": "prefect.flow.1"}]))


def test_related_requires_resource_id() -> None:
    with pytest.raises(ValidationError, match=r"prefect\.resource\.id"):
        Event.model_validate(_event_doc(related=[{"prefect.resource.role": "flow"}]))


def test_event_name_must_not_be_empty() -> None:
    with pytest.raises(ValidationError, match="event"):
        Event.model_validate(_event_doc(event=""))


def test_label_values_must_be_strings() -> None:
    with pytest.raises(ValidationError, match="valid string"):
        Event.model_validate(_event_doc(resource={"prefect.resource.id": "r", "n": 5}))


def test_label_and_related_limits_are_enforced() -> None:
    assert len(Event.model_validate(_event_doc(resource=_labels(500))).resource) == 500
    assert len(Event.model_validate(_event_doc(related=_related(500))).related) == 500

    with pytest.raises(ValidationError, match="501 labels; at most 500"):
        Event.model_validate(_event_doc(resource=_labels(501)))
    with pytest.raises(ValidationError, match="501 related resources; at most 500"):
        Event.model_validate(_event_doc(related=_related(501)))
    related_labels = {**_labels(501), "prefect.resource.role": "tag"}
    with pytest.raises(ValidationError, match=r"related\[0\] has 502 labels"):
        Event.model_validate(_event_doc(related=[related_labels]))


def test_label_and_related_limits_are_configurable() -> None:
    limits = {"limits": EventLimits(max_labels=3, max_related=1)}

    Event.model_validate(_event_doc(resource=_labels(3), related=_related(1)), context=limits)
    with pytest.raises(ValidationError, match="at most 3"):
        Event.model_validate(_event_doc(resource=_labels(4)), context=limits)
    with pytest.raises(ValidationError, match="at most 1"):
        Event.model_validate(_event_doc(related=_related(2)), context=limits)


def test_naive_occurred_is_utc() -> None:
    e = Event.model_validate(_event_doc(occurred="2026-03-01T09:00:00"))

    assert e.occurred == at(0)
    assert e.occurred.tzinfo is UTC


def test_occurred_with_offset_is_normalised_to_utc() -> None:
    e = Event.model_validate(
        _event_doc(occurred="2026-03-01T11:00:00+02:00", received="2026-03-01T10:00:05+01:00")
    )

    assert e.occurred == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert e.occurred.tzinfo is UTC
    assert e.received == at(5)
    assert e.received is not None and e.received.tzinfo is UTC


@pytest.mark.parametrize(
    ("occurred", "kind", "bound"),
    [
        ("9999-12-31T00:00:00Z", "less_than", "9000-01-01T00:00:00Z"),
        ("9000-01-01T00:00:00Z", "less_than", "9000-01-01T00:00:00Z"),
        ("8999-12-31T23:30:00-01:00", "less_than", "9000-01-01T00:00:00Z"),
        ("1969-12-31T23:59:59.999999Z", "greater_than_equal", "1970-01-01T00:00:00Z"),
        ("0001-01-01T00:00:00", "greater_than_equal", "1970-01-01T00:00:00Z"),
    ],
)
def test_occurred_off_the_calendar_is_refused_naming_the_field_and_bound(
    occurred: str, kind: str, bound: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Event.model_validate(_event_doc(occurred=occurred))

    [error] = refused.value.errors(include_url=False)
    assert error["loc"] == ("occurred",)
    assert error["type"] == kind
    assert bound in error["msg"]


def test_occurred_at_the_edges_of_the_calendar_is_accepted() -> None:
    first = Event.model_validate(_event_doc(occurred="1970-01-01T00:00:00Z"))
    last = Event.model_validate(_event_doc(occurred="8999-12-31T23:59:59.999999"))

    assert first.occurred == OCCURRED_START
    assert last.occurred == OCCURRED_END - timedelta(microseconds=1)


def test_windows_opened_by_any_accepted_event_end_on_the_calendar() -> None:
    # Why OCCURRED_END: the longest window, nested as deep as triggers go, still
    # ends before datetime.max (a year-9999 event made `explain` overflow).
    latest_end = OCCURRED_END + MAX_WITHIN * MAX_TRIGGER_DEPTH
    assert latest_end < datetime.max.replace(tzinfo=UTC) - timedelta(days=365)


def test_ingest_stamps_received() -> None:
    e = Event.model_validate(_event_doc(), context={"received": at(7)})

    assert e.received == at(7)


# -- §3: event triggers -------------------------------------------------------------------


def test_missing_trigger_type_means_event() -> None:
    auto = automation({"expect": ["x"], "threshold": 2})

    assert isinstance(auto.trigger, EventTrigger)
    assert auto.trigger.expect == {"x"}
    assert auto.trigger.threshold == 2


def test_missing_trigger_type_is_told_by_the_fields_as_prefect_does() -> None:
    leaf = {"expect": ["x"]}
    auto = automation(
        {"require": "all", "triggers": [leaf, {"triggers": [leaf, {"expect": ["y"]}]}]}
    )

    assert isinstance(auto.trigger, CompoundTrigger)
    first, second = auto.trigger.triggers
    assert isinstance(first, EventTrigger)
    assert isinstance(second, SequenceTrigger)
    assert [type(t) for t in second.triggers] == [EventTrigger, EventTrigger]


def test_unknown_trigger_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"expected\n.*Extra inputs are not permitted"):
        automation({"type": "event", "expected": ["x"]})


def test_unknown_trigger_type_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"trigger type must be one of .*'metric'"):
        automation({"type": "histogram", "expect": ["x"]})


def test_event_trigger_defaults() -> None:
    trigger = EventTrigger()

    assert trigger.posture is Posture.Reactive
    assert trigger.threshold == 1
    assert trigger.within == timedelta(0)
    assert trigger.match.root == {}
    assert trigger.related_specs == []
    assert trigger.after == set() and trigger.expect == set() and trigger.for_each == set()


def test_single_string_is_a_one_element_set() -> None:
    trigger = EventTrigger.model_validate({"expect": "x", "after": "a", "for_each": "env"})

    assert (trigger.expect, trigger.after, trigger.for_each) == ({"x"}, {"a"}, {"env"})


def test_trigger_is_immediate_when_reactive_without_window() -> None:
    assert EventTrigger(within=timedelta(0)).immediate
    assert not EventTrigger(within=timedelta(seconds=5)).immediate
    assert not EventTrigger(posture=Posture.Proactive).immediate


@pytest.mark.parametrize("doc", [{}, {"within": 0}, {"within": "PT0S"}])
def test_proactive_within_zero_becomes_ten_seconds(doc: dict[str, Any]) -> None:
    trigger = EventTrigger.model_validate({"posture": "Proactive", **doc})

    assert trigger.within == timedelta(seconds=10)


@pytest.mark.parametrize("within", [1, 5, 9.999])
def test_proactive_within_under_ten_seconds_is_rejected(within: float) -> None:
    with pytest.raises(ValidationError, match="at least 10 seconds"):
        EventTrigger.model_validate({"posture": "Proactive", "within": within})


def test_proactive_within_of_ten_seconds_or_more_is_kept() -> None:
    ten = EventTrigger(posture=Posture.Proactive, within=timedelta(seconds=10))
    longer = EventTrigger.model_validate({"posture": "Proactive", "within": 45})

    assert ten.within == timedelta(seconds=10)
    assert longer.within == timedelta(seconds=45)


def test_reactive_within_under_ten_seconds_is_kept() -> None:
    assert EventTrigger.model_validate({"within": 3}).within == timedelta(seconds=3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (90, timedelta(seconds=90)),
        (2.5, timedelta(seconds=2.5)),
        ("PT1M30S", timedelta(seconds=90)),
        ("P1D", timedelta(days=1)),
        ("00:01:30", timedelta(seconds=90)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_within_accepts_seconds_iso_and_timedelta(value: Any, expected: timedelta) -> None:
    composite = CompoundTrigger.model_validate({"triggers": [{"expect": ["a"]}], "within": value})

    assert EventTrigger.model_validate({"within": value}).within == expected
    assert composite.within == expected


def test_negative_within_is_rejected() -> None:
    with pytest.raises(ValidationError):
        EventTrigger.model_validate({"within": -1})
    with pytest.raises(ValidationError):
        SequenceTrigger.model_validate({"triggers": [{"expect": ["a"]}], "within": -1})


# -- §4: composite triggers -----------------------------------------------------------------


def _children(n: int) -> list[dict[str, Any]]:
    return [{"type": "event", "expect": [f"e{i}"]} for i in range(n)]


@pytest.mark.parametrize("require", [0, -1, 3, 10])
def test_require_out_of_range_is_rejected(require: int) -> None:
    with pytest.raises(ValidationError, match="require must be"):
        CompoundTrigger.model_validate({"triggers": _children(2), "require": require})


def test_require_unknown_word_is_rejected() -> None:
    with pytest.raises(ValidationError):
        CompoundTrigger.model_validate({"triggers": _children(2), "require": "most"})


@pytest.mark.parametrize(("require", "needed"), [("any", 1), ("all", 3), (1, 1), (2, 2), (3, 3)])
def test_compound_needed_firings_follow_require(require: Any, needed: int) -> None:
    trigger = CompoundTrigger.model_validate({"triggers": _children(3), "require": require})

    assert trigger.needed_firings == needed


def test_sequence_needs_every_child_and_composite_within_defaults_to_none() -> None:
    trigger = SequenceTrigger.model_validate({"triggers": _children(3)})

    assert trigger.needed_firings == 3
    assert trigger.within is None


def test_composite_children_nest_freely() -> None:
    auto = automation(
        {
            "type": "compound",
            "require": "any",
            "triggers": [
                {"type": "sequence", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]},
                {"type": "compound", "triggers": [{"expect": ["c"]}]},
                {"expect": ["d"], "posture": "Proactive"},
            ],
        }
    )

    assert isinstance(auto.trigger, CompoundTrigger)
    first, second, third = auto.trigger.triggers
    assert isinstance(first, SequenceTrigger)
    assert all(isinstance(t, EventTrigger) for t in first.triggers)
    assert isinstance(second, CompoundTrigger)
    assert isinstance(third, EventTrigger) and third.within == timedelta(seconds=10)


# -- §5: the run-deployment loop guard ------------------------------------------------------

LOOPING = [
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.Pending",
    "prefect.flow-run.Running",
    "prefect.flow-run.*",
]
INFERRED = {"type": "run-deployment", "source": "inferred"}
SELECTED = {"type": "run-deployment", "source": "selected", "deployment_id": DEPLOYMENT_ID}


@pytest.mark.parametrize("name", LOOPING)
def test_run_deployment_loop_guard_rejects_inferred_deployment(name: str) -> None:
    trigger = {
        "type": "event",
        "expect": [name],
        "match": {"prefect.resource.id": "prefect.flow-run.1234"},
    }

    with pytest.raises(ValidationError, match="endless loop"):
        automation(trigger, actions=[INFERRED])


@pytest.mark.parametrize(
    "narrowing",
    [
        {},
        {"match": {"prefect.resource.id": "prefect.flow-run.*"}},
        {"match_related": {}},
        {"match_related": [{"prefect.resource.id": "prefect.flow-run.*"}]},
    ],
)
@pytest.mark.parametrize("name", LOOPING)
def test_run_deployment_loop_guard_rejects_selected_deployment_matching_every_flow_run(
    name: str, narrowing: dict[str, Any]
) -> None:
    trigger = {"type": "event", "expect": [name], **narrowing}

    with pytest.raises(ValidationError, match="narrow the trigger"):
        automation(trigger, actions=[{"type": "do-nothing"}, SELECTED])


@pytest.mark.parametrize(
    "narrowing",
    [
        {"match": {"prefect.resource.id": "prefect.flow-run.1234"}},
        {"match": {"prefect.resource.id": "prefect.flow-run.*", "env": "prod"}},
        {"match_related": {"prefect.resource.id": "prefect.deployment.42"}},
        {
            "match_related": [
                {"prefect.resource.id": "prefect.flow-run.*"},
                {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.nightly"},
            ]
        },
    ],
)
def test_run_deployment_loop_guard_allows_narrowed_selected_deployment(
    narrowing: dict[str, Any],
) -> None:
    trigger = {"type": "event", "expect": ["prefect.flow-run.Running"], **narrowing}

    auto = automation(trigger, actions=[SELECTED])

    assert auto.actions[0].type == "run-deployment"


def test_run_deployment_loop_guard_allows_other_flow_run_events() -> None:
    auto = automation(
        {"type": "event", "expect": ["prefect.flow-run.Completed"]}, actions=[INFERRED]
    )

    assert len(auto.actions) == 1


def test_run_deployment_loop_guard_allows_proactive_trigger() -> None:
    trigger = {
        "type": "event",
        "posture": "Proactive",
        "expect": ["prefect.flow-run.Running"],
        "within": 60,
    }

    auto = automation(trigger, actions=[INFERRED])

    assert len(auto.actions) == 1
