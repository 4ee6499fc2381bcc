"""The write-back's shape of Marmot's automation events, and the bridge's resume point."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from prometheus_client import CollectorRegistry

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.config import load_config
from marmot.engine.models.events import Event
from marmot.engine.triggers.firing import FIRING_NAMESPACE, name_uuid
from marmot.transport.prefect_api import PrefectAuth, events_out_url, time_filter
from marmot.transport.prefect_cursor import BridgeCursor
from marmot.transport.prefect_writeback import WriteBack

AUTOMATION = uuid4()
FIRING = uuid4()
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def writeback() -> WriteBack:
    return WriteBack(
        "http://127.0.0.1:1/api",
        PrefectAuth(),
        lambda automation_id: "Proactive" if automation_id == str(AUTOMATION) else None,
        registry=CollectorRegistry(),
        clock=SYSTEM_CLOCK,
    )


def action_event(status: str) -> Event:
    triggered_id = name_uuid(FIRING_NAMESPACE, f"event|{FIRING}")
    return Event.model_validate(
        {
            "id": str(name_uuid(FIRING_NAMESPACE, f"action|{FIRING}|0|{status}")),
            "occurred": NOW.isoformat(),
            "event": f"prefect.automation.action.{status}",
            "resource": {
                "prefect.resource.id": f"prefect.automation.{AUTOMATION}",
                "prefect.resource.name": "stuck runs",
            },
            "related": [
                {
                    "prefect.resource.id": f"prefect.event.{triggered_id}",
                    "prefect.resource.role": "automation-triggered-event",
                }
            ],
            "payload": {
                "action_index": 0,
                "action_type": "cancel-flow-run",
                "invocation": str(FIRING),
            },
        }
    )


def test_action_events_get_the_posture_and_prefects_follows_chain() -> None:
    sender = writeback()
    triggered = sender._shape(action_event("triggered"))
    executed = sender._shape(action_event("executed"))
    assert triggered["resource"]["prefect.posture"] == "Proactive"
    assert triggered["follows"] == str(name_uuid(FIRING_NAMESPACE, f"event|{FIRING}"))
    assert executed["follows"] == triggered["id"]
    assert "received" not in executed


def test_only_automation_events_are_queued_and_known_as_own() -> None:
    sender = writeback()
    other = Event.model_validate(
        {"occurred": NOW.isoformat(), "event": "x.y", "resource": {"prefect.resource.id": "r"}}
    )
    own = action_event("executed")
    sender.offer([other, own])
    assert sender.is_own(own.id) and not sender.is_own(other.id)
    assert list(sender._queue) == [own]


def test_the_cursor_is_kept_per_server_and_only_moves_forward(tmp_path: Path) -> None:
    cursor = BridgeCursor.load(tmp_path, "http://a/api")
    assert cursor.newest is None
    cursor.advance(NOW)
    cursor.advance(NOW - timedelta(minutes=1))
    cursor.save()
    assert BridgeCursor.load(tmp_path, "http://a/api").newest == NOW
    assert BridgeCursor.load(tmp_path, "http://b/api").newest is None  # another server
    (tmp_path / "prefect-bridge.json").write_text("{not json")
    assert BridgeCursor.load(tmp_path, "http://a/api").newest is None


def test_auth_headers_and_urls() -> None:
    assert PrefectAuth(api_key="k").headers() == {"Authorization": "Bearer k"}
    assert PrefectAuth(auth_string="u:p").headers() == {"Authorization": "Basic dTpw"}
    assert PrefectAuth(auth_string="u:p").token == "u:p"
    assert events_out_url("https://x/api/") == "wss://x/api/events/out"
    window = time_filter({"event": {"prefix": ["a."]}}, NOW, NOW)
    assert window["event"] == {"prefix": ["a."]} and "since" in window["occurred"]


def test_the_prefect_section_reads_json_filters_and_lends_the_orchestrator_its_url() -> None:
    config = load_config(
        None,
        env={
            "MARMOT_PREFECT_API_URL": "http://127.0.0.1:4200/api",
            "MARMOT_PREFECT_FILTER": '{"event": {"prefix": ["prefect.flow-run."]}}',
        },
    )
    assert config.prefect.filter == {"event": {"prefix": ["prefect.flow-run."]}}
    assert config.orchestrator.api_url == "http://127.0.0.1:4200/api"
    assert config.prefect.write_back
    separate = load_config(
        None,
        env={
            "MARMOT_PREFECT_API_URL": "http://127.0.0.1:4200/api",
            "MARMOT_ORCHESTRATOR_API_URL": "http://elsewhere/api",
        },
    )
    assert separate.orchestrator.api_url == "http://elsewhere/api"
