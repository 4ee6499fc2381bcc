"""``marmot automation test``'s table rows, from a real engine's verdicts."""

from __future__ import annotations

from typing import Any

from marmot.cli.why import parse_duration, verdict_rows
from marmot.engine.models.automations import Automation
from marmot.engine.triggers.verdicts import DryRun
from tests.engine.factories import event


def _rows(trigger: dict[str, Any], *events: Any) -> list[list[str]]:
    dry = DryRun(Automation.model_validate({"name": "rows", "trigger": trigger}))
    verdicts = [dry.test(e).model_dump(mode="json") for e in events]
    return verdict_rows(verdicts[-1])


def test_rows_spell_out_each_condition_and_the_verdict() -> None:
    trigger = {
        "expect": ["job.*"],
        "match": {"env": "!dev"},
        "match_related": {"prefect.resource.role": "flow"},
        "threshold": 2,
        "within": 60,
    }
    related = [{"prefect.resource.id": "f.1", "prefect.resource.role": "flow"}]
    rows = _rows(trigger, event("job.failed", 0, labels={"env": "prod"}, related=related))
    by_condition = {row[1]: row for row in rows}
    assert by_condition["expect"][2] == "job.failed vs job.* (glob) ✓"
    assert by_condition["match env"][2] == "'prod' vs !dev (not (equals)) ✓"
    assert by_condition["match_related[0]"][2].startswith("related[0] matches:")
    assert by_condition["verdict: counts"][2:] == ["counts towards 1 of 2", "✓"]


def test_rows_of_a_failed_condition_stop_before_the_bucket() -> None:
    rows = _rows({"expect": ["job.*"], "match": {"env": "prod"}}, event("job.failed", 0))
    assert [row[1] for row in rows] == ["expect", "match env", "verdict: condition_failed"]
    assert rows[-1][3] == "✗"


def test_rows_show_composite_children() -> None:
    trigger = {"type": "sequence", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]}
    rows = _rows(trigger, event("a", 0), event("b", 1))
    [parent] = [row for row in rows if row[0] == "trigger"]
    assert parent[1] == "sequence (children fired: trigger.triggers[1])"
    assert parent[2].startswith("fires:") and parent[3] == "✓"


def test_durations() -> None:
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("7d").days == 7
    assert parse_duration("1.5h").total_seconds() == 5400
