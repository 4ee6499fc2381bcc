"""``marmot automation explain``'s table rows, from a real engine's explanation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from marmot.cli.automation import explain_rows
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.triggers.evaluator import Evaluator

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def _event(name: str, seconds: float, resource: str) -> Event:
    return Event.model_validate(
        {
            "occurred": T0 + timedelta(seconds=seconds),
            "event": name,
            "resource": {"prefect.resource.id": resource},
        }
    )


def _explanation(trigger: dict[str, Any], events: list[Event]) -> dict[str, Any]:
    engine = Evaluator(Automation.model_validate({"name": "watch", "trigger": trigger}))
    engine.apply(events)
    explained: dict[str, Any] = engine.explain().model_dump(mode="json")
    return explained


def test_a_metric_trigger_shows_its_state_value_and_query() -> None:
    metric = {"name": "duration", "operator": ">", "threshold": 60, "range": 600}
    explanation = _explanation(
        {
            "type": "compound",
            "require": "any",
            "triggers": [{"posture": "Metric", "metric": metric}, {"expect": ["x"], "within": 30}],
        },
        [
            _event("prefect.flow-run.Running", 0, "prefect.flow-run.1"),
            _event("prefect.flow-run.Completed", 100, "prefect.flow-run.1"),
            _event("x", 100, "r"),
        ],
    )
    rows = {row[0]: row for row in explain_rows(explanation)}
    assert rows["trigger.triggers[0]"] == [
        "trigger.triggers[0]",
        "Metric",
        "",
        "pending since 2026-05-04T08:01:40Z",
        "100 (1 run(s))",
        "duration > 60 over 600 s, for 300 s",
    ]
    # Event triggers still show their buckets, composites their children.
    assert rows["trigger.triggers[1]"][1] == "Reactive"
    assert rows["trigger"][1] == "compound"


def test_a_metric_trigger_without_runs_has_no_value() -> None:
    metric = {"name": "successes", "operator": "<", "threshold": 90}
    [row] = explain_rows(_explanation({"type": "metric", "metric": metric}, []))
    assert row[1:] == ["Metric", "", "ok", "no value", "successes < 90 over 300 s, for 300 s"]


def test_held_expect_events_show_per_key() -> None:
    trigger = {
        "posture": "Proactive",
        "after": ["job.started"],
        "expect": ["job.finished"],
        "for_each": ["prefect.resource.id"],
        "within": 30,
    }
    rows = explain_rows(
        _explanation(
            trigger,
            [_event("job.finished", 5, "job.a"), _event("job.finished", 9, "job.a")],
        )
    )
    assert rows == [
        [
            "trigger",
            "held",
            "prefect.resource.id=job.a",
            "2026-05-04T08:00:05Z .. 2026-05-04T08:00:09Z",
            2,
            "",
        ]
    ]
