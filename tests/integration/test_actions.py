"""Actions through the whole daemon: a published event fires an automation whose
actions reach real servers on 127.0.0.1, with templates, retries and an audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, event_doc, wait_for
from tests.transport.notify_servers import RecordingServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    running = RecordingServer()
    yield running
    running.close()


@pytest.fixture
def client(daemon: DaemonThread) -> Iterator[Client]:
    with Client(daemon.rpc_url, timeout_s=30) as c:
        yield c


def _webhook(client: Client, server: RecordingServer, path: str) -> UUID:
    block = client.create_block(
        {
            "block_type_slug": "webhook",
            "name": f"hook-{uuid4().hex[:8]}",
            "data": {"url": server.url(path), "method": "POST", "allow_private_urls": True},
        }
    )
    return block.id


def _automation(
    name: str, expect: str, actions: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {
            "type": "event",
            "expect": [expect],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 0,
        },
        "actions": actions,
        **extra,
    }


def _outcomes(client: Client, automation_id: UUID, status: str) -> list[dict[str, Any]]:
    return client.filter_events(
        names=[f"prefect.automation.action.{status}"],
        resource_id=f"prefect.automation.{automation_id}",
        limit=100,
    )


def test_call_webhook_renders_the_payload_from_the_event(
    client: Client, server: RecordingServer
) -> None:
    block_id = _webhook(client, server, "/render")
    automation = client.create_automation(
        _automation(
            "webhook on failure",
            "test.actions.render",
            [
                {
                    "type": "call-webhook",
                    "block_document_id": str(block_id),
                    "payload": '{"resource": "{{ event.resource.id }}", '
                    '"automation": "{{ automation.name }}", '
                    '"flow": "{% for r in event.related if r.role == \'flow\' %}{{ r.name }}'
                    '{% endfor %}"}',
                }
            ],
        )
    )
    client.emit(
        [
            event_doc(
                "test.actions.render",
                "prefect.flow-run.7",
                related=[
                    {
                        "prefect.resource.id": "prefect.flow.1",
                        "prefect.resource.role": "flow",
                        "prefect.resource.name": "etl",
                    }
                ],
            )
        ]
    )
    (request,) = wait_for(lambda: server.on("/render"), what="the webhook call")
    assert request.json() == {
        "resource": "prefect.flow-run.7",
        "automation": "webhook on failure",
        "flow": "etl",
    }
    (executed,) = wait_for(lambda: _outcomes(client, automation.id, "executed"), what="executed")
    assert executed["payload"]["action_type"] == "call-webhook"
    assert _outcomes(client, automation.id, "triggered")


def test_a_503_is_retried_until_it_succeeds(client: Client, server: RecordingServer) -> None:
    server.script("/flaky", 503, 503)
    block_id = _webhook(client, server, "/flaky")
    automation = client.create_automation(
        _automation(
            "flaky webhook",
            "test.actions.flaky",
            [{"type": "call-webhook", "block_document_id": str(block_id), "payload": "hi"}],
        )
    )
    client.emit([event_doc("test.actions.flaky", "job.1")])
    (executed,) = wait_for(lambda: _outcomes(client, automation.id, "executed"), what="executed")
    assert executed["payload"]["attempts"] == 3
    assert len(server.on("/flaky")) == 3


def test_a_400_fails_at_once_with_the_reason(client: Client, server: RecordingServer) -> None:
    server.reply("/refuses", 400, "bad payload")
    block_id = _webhook(client, server, "/refuses")
    automation = client.create_automation(
        _automation(
            "refused webhook",
            "test.actions.refused",
            [{"type": "call-webhook", "block_document_id": str(block_id), "payload": "{}"}],
        )
    )
    client.emit([event_doc("test.actions.refused", "job.1")])
    (failed,) = wait_for(lambda: _outcomes(client, automation.id, "failed"), what="failed")
    assert "400" in failed["payload"]["reason"]
    assert failed["payload"]["attempts"] == 1
    assert len(server.on("/refuses")) == 1


def test_slack_notification_through_a_stored_block(client: Client, server: RecordingServer) -> None:
    block = client.create_block(
        {
            "block_type_slug": "slack-webhook",
            "name": f"ops-{uuid4().hex[:8]}",
            "data": {"url": server.url("/slack"), "allow_private_urls": True},
        }
    )
    client.create_automation(
        _automation(
            "tell slack",
            "test.actions.slack",
            [
                {
                    "type": "send-notification",
                    "block_document_id": str(block.id),
                    "subject": "{{ event.resource.id }} failed",
                    "body": "Automation {{ automation.name }} saw {{ event.event }}",
                }
            ],
        )
    )
    client.emit([event_doc("test.actions.slack", "prefect.flow-run.9")])
    (request,) = wait_for(lambda: server.on("/slack"), what="the Slack message")
    text = request.body.decode()
    assert "prefect.flow-run.9 failed" in text
    assert "Automation tell slack saw test.actions.slack" in text


def test_an_automation_pauses_itself_and_declares_an_incident(client: Client) -> None:
    automation = client.create_automation(
        _automation(
            "one shot",
            "test.actions.oneshot",
            [
                {
                    "type": "declare-incident",
                    "title": "{{ event.resource.id }} is down",
                    "severity": "critical",
                }
            ],
            actions_on_trigger=[{"type": "pause-automation", "source": "inferred"}],
        )
    )
    client.emit([event_doc("test.actions.oneshot", "db.primary")])
    wait_for(
        lambda: not client.read_automation(automation.id).enabled,
        what="the automation to pause itself",
    )
    (incident,) = wait_for(
        lambda: client.list_incidents(automation_id=automation.id), what="the incident"
    )
    assert (incident["title"], incident["severity"]) == ("db.primary is down", "critical")


def test_a_missing_target_fails_with_a_reason(client: Client) -> None:
    automation = client.create_automation(
        _automation(
            "cancel what",
            "test.actions.notarget",
            [{"type": "pause-automation", "source": "inferred"}],
        )
    )
    client.emit([event_doc("test.actions.notarget", "not.an.automation")])
    (failed,) = wait_for(lambda: _outcomes(client, automation.id, "failed"), what="failed")
    assert "concerns no automation" in failed["payload"]["reason"]
