"""Incoming webhooks end to end: managed over RPC, called over real HTTP, their events in
the durable log and firing automations on the session daemon (real Ray, SQLite)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from marmot.engine.errors import Conflict, NotFound, ValidationFailed
from marmot.transport.client import AsyncClient, Client
from tests.integration.harness import DaemonThread, reactive_doc, wait_for

pytestmark = pytest.mark.integration

PUSH_TEMPLATE = {
    "event": "it.github.{{ headers['X-GitHub-Event'] }}",
    "resource": {
        "prefect.resource.id": "it.repo.{{ body.repository.full_name }}",
        "prefect.resource.name": "{{ body.repository.name }}",
    },
    "payload": {"commits": "{{ body.commits | length }}"},
}
STATIC = '{"event": "it.cron.done", "resource": {"prefect.resource.id": "it.cron.nightly"}}'


@pytest.fixture
def client(daemon: DaemonThread) -> Iterator[Client]:
    with Client(daemon.rpc_url, timeout_s=30) as c:
        yield c


def _fired(client: Client, automation_id: object) -> list[dict[str, Any]]:
    return [
        e
        for e in client.filter_events(names=["prefect.automation.triggered"], limit=1000)
        if e["resource"]["prefect.resource.id"] == f"prefect.automation.{automation_id}"
    ]


def test_a_posted_request_becomes_a_logged_event_that_fires_an_automation(
    daemon: DaemonThread, client: Client
) -> None:
    automation = client.create_automation(reactive_doc("on webhook push", "it.github.push"))
    webhook = client.create_webhook(
        "it-github", PUSH_TEMPLATE, description="GitHub pushes, in the integration test"
    )
    port = daemon.config.http.port
    assert webhook["url"] == f"http://127.0.0.1:{port}/hooks/{webhook['slug']}"
    assert webhook["enabled"] is True and len(webhook["slug"]) == 22

    reply = httpx.post(
        webhook["url"],
        json={"repository": {"full_name": "acme/etl", "name": "etl"}, "commits": [{}, {}, {}]},
        headers={"X-GitHub-Event": "push", "Authorization": "Bearer not-for-templates"},
    )
    assert reply.status_code == 204

    # 204 means the event is in the durable log: no waiting needed to read it.
    [event] = client.filter_events(names=["it.github.push"])
    assert event["resource"] == {
        "prefect.resource.id": "it.repo.acme/etl",
        "prefect.resource.name": "etl",
    }
    assert event["payload"] == {"commits": "3"}
    assert event["related"] == [
        {
            "prefect.resource.id": f"marmot.webhook.{webhook['id']}",
            "prefect.resource.name": "it-github",
            "prefect.resource.role": "webhook",
        }
    ]
    assert event["received"] is not None
    [fired] = wait_for(lambda: _fired(client, automation.id), what="the automation to fire")
    assert fired["payload"]["triggering_event"]["id"] == event["id"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'marmot_webhook_requests_total{outcome="accepted",webhook="it-github"} 1.0' in metrics
    assert 'marmot_events_received_total{source="webhook"}' in metrics
    client.delete_automation(automation.id)
    client.delete_webhook(webhook["id"])


def test_a_static_webhook_through_its_life_rotate_disable_fail_delete(client: Client) -> None:
    webhook = client.create_webhook("it-cron", STATIC)
    url = webhook["url"]
    assert httpx.get(url).status_code == 204
    [event] = client.filter_events(names=["it.cron.done"])
    assert event["payload"]["method"] == "GET"  # no payload in the template: the request

    assert httpx.get(url.rsplit("/", 1)[0] + "/AERylZ_uewzpDx-8fcweHQ").status_code == 404

    rotated = client.rotate_webhook(webhook["id"])
    assert rotated["url"] != url
    assert httpx.get(url).status_code == 404
    assert httpx.head(rotated["url"]).status_code == 204

    disabled = client.update_webhook(webhook["id"], enabled=False)
    assert disabled["enabled"] is False and disabled["url"] == rotated["url"]
    assert httpx.delete(rotated["url"]).status_code == 404
    client.update_webhook(webhook["id"], enabled=True)
    assert httpx.delete(rotated["url"]).status_code == 204

    # A template whose output is not an event: 400, and the failure in the stream.
    client.update_webhook(webhook["id"], template='{"event": "{{ body.name }}"}')
    reply = httpx.post(rotated["url"], json={"name": "it.half"})
    assert reply.status_code == 400
    assert reply.text.startswith("the template's output is not a valid event: resource")
    [failed] = client.filter_events(
        names=["marmot.webhook.failed"], resource_id=f"marmot.webhook.{webhook['id']}"
    )
    assert failed["payload"]["error"] == reply.text
    assert failed["payload"]["rendered"] == '{"event": "it.half"}'
    assert json.loads(failed["payload"]["body"]) == {"name": "it.half"}

    client.delete_webhook(webhook["id"])
    assert httpx.post(rotated["url"], json={}).status_code == 404
    with pytest.raises(NotFound):
        client.read_webhook(webhook["id"])


def test_the_api_refuses_bad_webhooks_with_their_fields(client: Client) -> None:
    client.create_webhook("it-unique", STATIC)
    with pytest.raises(Conflict, match="already exists"):
        client.create_webhook("it-unique", STATIC)
    with pytest.raises(ValidationFailed) as caught:
        client.create_webhook("it-broken", '{"event": "{{ body.x "}')
    assert caught.value.details[0]["loc"] == ["template"]
    with pytest.raises(ValidationFailed, match="the static template is not a valid event"):
        client.create_webhook("it-static", '{"event": "x"}')
    with pytest.raises(ValidationFailed) as caught:
        client.call("webhooks.create", {"webhook": {"name": "x", "template": STATIC, "slug": "s"}})
    assert caught.value.details[0]["loc"] == ["slug"]
    with pytest.raises(ValidationFailed):
        client.call(
            "webhooks.update", {"id": client.read_webhook_by_name("it-unique")["id"], "slug": "s"}
        )
    with pytest.raises(NotFound):
        client.read_webhook_by_name("it-nobody")
    client.delete_webhook(client.read_webhook_by_name("it-unique")["id"])


def test_the_async_client_manages_webhooks(daemon: DaemonThread) -> None:
    async def main() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        async with AsyncClient(daemon.rpc_url, timeout_s=30) as client:
            created = await client.create_webhook("it-async", STATIC, enabled=False)
            listed = await client.list_webhooks(name_prefix="it-async")
            renamed = await client.update_webhook(created["id"], name="it-async-2", enabled=True)
            rotated = await client.rotate_webhook(renamed["id"])
            assert (await client.read_webhook_by_name("it-async-2"))["slug"] == rotated["slug"]
            await client.delete_webhook(created["id"])
            return created, listed, rotated

    created, listed, rotated = asyncio.run(main())
    assert created["enabled"] is False
    assert [w["id"] for w in listed] == [created["id"]]
    assert rotated["name"] == "it-async-2" and rotated["slug"] != created["slug"]
