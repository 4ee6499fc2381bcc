"""The console's pure parts: trigger summaries, pasted documents, dry-run verdicts
in words, the templates the form starts from, and browser sessions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from marmot.engine.clock import ManualClock
from marmot.engine.models.automations import Automation
from marmot.engine.templates.checks import validated_automation
from marmot.transport.console.app import is_loopback_host
from marmot.transport.console.sessions import Sessions
from marmot.transport.console.starters import STARTERS, starter_document
from marmot.transport.console.summaries import (
    DocumentError,
    automation_id_of,
    parse_document,
    trigger_summary,
    verdict_lines,
)


def _dumped(document: dict[str, object]) -> dict[str, object]:
    """A trigger as the RPC returns it (durations as ISO 8601)."""
    return Automation.model_validate(document).model_dump(mode="json")["trigger"]  # type: ignore[no-any-return]


def test_every_template_is_a_valid_automation_and_each_copy_is_fresh() -> None:
    keys = [s.key for s in STARTERS]
    assert keys == [
        "flow-run-state",
        "work-pool-status",
        "work-queue-status",
        "deployment-status",
        "metric-threshold",
        "incident-declaration",
        "custom-event",
    ]
    for starter in STARTERS:
        validated_automation(starter.document)
    first = starter_document("custom-event")
    assert first is not None
    first["name"] = "changed"
    assert starter_document("custom-event") == STARTERS[-1].document
    assert starter_document("nope") is None


def test_event_trigger_summary_says_posture_events_threshold_window_and_for_each() -> None:
    trigger = _dumped(
        {
            "name": "x",
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": ["b.two", "a.one"],
                "for_each": ["prefect.resource.id"],
                "threshold": 3,
                "within": 600,
            },
        }
    )
    assert trigger_summary(trigger) == (
        "Reactive: a.one, b.two x3 within 10m for each prefect.resource.id"
    )
    proactive = _dumped(
        {
            "name": "x",
            "trigger": {"type": "event", "posture": "Proactive", "expect": ["hb"], "within": 3600},
        }
    )
    assert trigger_summary(proactive) == "Proactive: fewer than 1 of hb within 1h"
    no_window = _dumped({"name": "x", "trigger": {"type": "event", "expect": ["e"]}})
    assert trigger_summary(no_window) == "Reactive: e"


def test_metric_and_composite_summaries() -> None:
    metric = _dumped(STARTERS[4].document)
    assert trigger_summary(metric) == "Metric: duration > 600.0 over 5m for 5m"
    compound = _dumped(
        {
            "name": "x",
            "trigger": {
                "type": "compound",
                "require": "any",
                "within": 60,
                "triggers": [
                    {"type": "event", "expect": ["a"]},
                    {"type": "event", "expect": ["b"]},
                ],
            },
        }
    )
    assert trigger_summary(compound) == "Compound (any) within 1m: Reactive: a; Reactive: b"


def test_a_pasted_document_is_json_or_yaml_and_a_syntax_error_names_its_line() -> None:
    assert parse_document('{"name": "a"}') == {"name": "a"}
    assert parse_document("name: a\nenabled: false\n") == {"name": "a", "enabled": False}
    with pytest.raises(DocumentError) as yaml_error:
        parse_document("name: a\ntrigger: [unclosed\n")
    assert "not valid YAML" in str(yaml_error.value) and yaml_error.value.line == 3
    with pytest.raises(DocumentError) as json_error:
        parse_document('{"name":\n "a",,}')
    assert "not valid JSON" in str(json_error.value) and json_error.value.line == 2
    with pytest.raises(DocumentError, match="mapping"):
        parse_document("- a\n- b\n")
    with pytest.raises(DocumentError, match="empty"):
        parse_document("  \n")


def test_automation_resources_link_to_their_automation() -> None:
    automation_id = "0b9c2f0e-7f6a-4c34-9d8f-3e3a1c2b4d5e"
    assert automation_id_of(f"prefect.automation.{automation_id}") == automation_id
    assert automation_id_of("prefect.flow-run.1") is None
    assert automation_id_of("prefect.automation.short") is None


def test_verdicts_are_said_condition_by_condition() -> None:
    report = {
        "events": [
            {
                "event": "prefect.flow-run.Failed",
                "fires": False,
                "summary": "counts towards 1 of 2",
                "triggers": [
                    {
                        "path": "trigger",
                        "name": {"expect": [{"pattern": "prefect.flow-run.*"}], "expected": True},
                        "match": [
                            {
                                "label": "prefect.resource.id",
                                "value": "prefect.flow-run.1",
                                "patterns": [{"pattern": "prefect.flow-run.*"}],
                                "ok": True,
                            }
                        ],
                        "match_related": [],
                        "outcome": "counts",
                        "reason": "counts towards 1 of 2",
                    }
                ],
                "composites": [],
            }
        ]
    }
    assert verdict_lines(report) == [
        "prefect.flow-run.Failed: does not fire (counts towards 1 of 2)",
        "  trigger: name in expect [prefect.flow-run.*]: yes",
        "  trigger: prefect.resource.id = 'prefect.flow-run.1' matches [prefect.flow-run.*]: yes",
        "  trigger: counts: counts towards 1 of 2",
    ]


def test_on_loopback_a_session_starts_logged_in() -> None:
    sessions = Sessions(None)
    session, is_new = sessions.find_or_start(None)
    assert is_new and session.is_logged_in and not sessions.needs_login
    again, is_new = sessions.find_or_start(session.id)
    assert again is session and not is_new


def test_beyond_loopback_a_login_needs_the_token_and_gets_a_new_session() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    sessions = Sessions("s3cret", clock=clock)
    session, _ = sessions.find_or_start(None)
    assert not session.is_logged_in
    assert sessions.log_in(session, "wrong") is None
    fresh = sessions.log_in(session, "s3cret")
    assert fresh is not None and fresh.is_logged_in and fresh.id != session.id
    assert fresh.csrf != session.csrf
    # The cookie from before the login is worth nothing now.
    planted, is_new = sessions.find_or_start(session.id)
    assert is_new and not planted.is_logged_in
    # CSRF tokens are the session's own.
    assert fresh.has_csrf(fresh.csrf)
    assert not fresh.has_csrf(session.csrf) and not fresh.has_csrf(None)
    # Twelve idle hours end a session.
    clock.advance(12 * 3600 + 1)
    after, is_new = sessions.find_or_start(fresh.id)
    assert is_new and not after.is_logged_in
    sessions.log_out(after)
    assert sessions.find_or_start(after.id)[1]


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1")
    assert is_loopback_host("localhost") and is_loopback_host("127.0.0.2")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("192.0.2.1")
    assert not is_loopback_host("example.internal")
