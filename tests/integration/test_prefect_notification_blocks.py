"""Notification blocks saved on a real Prefect server by Prefect's own block classes,
read by id and sent through by Marmot's ``send-notification``.

The blocks are created as a Prefect user creates them (``Block.save``), so the
documents Marmot reads are exactly what Prefect stores for each type.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import httpx
import pytest

from marmot.actors.store import Store
from marmot.engine.models.blocks import block_from_prefect
from marmot.transport.orchestrator import OrchestratorClient
from tests.transport.intercept import Interceptor, intercepting
from tests.transport.notify_servers import RecordingServer, serving
from tests.transport.test_notification_runners import run_of, runners

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECRET = "s3cret-0f9e8d7c"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def web() -> Iterator[RecordingServer]:
    yield from serving()


@pytest.fixture
def wire(web: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Interceptor]:
    yield from intercepting(web, monkeypatch)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "marmot.db") as opened:
        yield opened


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        yield client


@pytest.fixture
async def orchestrator(prefect_api: str) -> AsyncIterator[OrchestratorClient]:
    client = OrchestratorClient(prefect_api, timeout_s=10.0)
    yield client
    await client.aclose()


def _prefect_blocks(web: RecordingServer) -> dict[str, Any]:
    from prefect.blocks import notifications as n

    parts = urlsplit(web.url("/"))
    return {
        "slack-webhook": n.SlackWebhook(url=web.url(f"/slack/{SECRET}")),
        "ms-teams-webhook": n.MicrosoftTeamsWebhook(
            url=f"https://example.logic.azure.com:443/workflows/wf/triggers/manual/paths/invoke?sig={SECRET}"
        ),
        "custom-webhook": n.CustomWebhookNotificationBlock(
            name="hook",
            url=web.url("/custom/{{ token }}"),
            json_data={"text": "{{ subject }}: {{ body }}"},
            secrets={"token": SECRET},
        ),
        "discord-webhook": n.DiscordWebhook(webhook_id="4242", webhook_token=SECRET),
        "mattermost-webhook": n.MattermostWebhook(
            hostname=str(parts.hostname), port=int(parts.port or 0), token=SECRET
        ),
        "pager-duty-webhook": n.PagerDutyWebHook(integration_key=SECRET, api_key="a" + SECRET),
        "opsgenie-webhook": n.OpsgenieWebhook(apikey=SECRET, target_team=["ops"]),
        "sendgrid-email": n.SendgridEmail(
            api_key=SECRET, sender_email="marmot@example.com", to_emails=["ann@example.com"]
        ),
        "twilio-sms": n.TwilioSMS(
            account_sid="AC0123abcd",
            auth_token="tok0123",
            from_phone_number="+15551234567",
            to_phone_numbers=["+15557654321"],
        ),
    }


def _save(prefect_api: str, block: Any) -> UUID:
    """Save a block with Prefect's client, as a Prefect user does."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def save() -> UUID:
        with temporary_settings({PREFECT_API_URL: prefect_api}):
            saved: UUID = await block.save(f"marmot-{uuid4().hex[:8]}")
        return saved

    # Prefect's async client runs on a loop of its own, in a thread: the test's
    # loop is already running.
    found: list[UUID] = []
    thread = threading.Thread(target=lambda: found.append(asyncio.run(save())))
    thread.start()
    thread.join(60)
    assert found, "saving the block on Prefect did not finish"
    return found[0]


def _notify(block_id: UUID, subject: str, body: str) -> dict[str, Any]:
    return {
        "type": "send-notification",
        "block_document_id": str(block_id),
        "subject": subject,
        "body": body,
    }


async def test_every_prefect_notification_block_is_read_by_id(
    prefect_api: str, orchestrator: OrchestratorClient, web: RecordingServer
) -> None:
    for slug, block in _prefect_blocks(web).items():
        block_id = _save(prefect_api, block)
        document = await orchestrator.read_block_document(block_id)
        assert document["block_type"]["slug"] == slug
        ours = block_from_prefect(document)
        assert ours.block_type_slug == slug
        assert ours.id == block_id
        theirs = {
            name: value.get_secret_value() if hasattr(value, "get_secret_value") else value
            for name, value in block.model_dump().items()
        }
        for name, value in ours.data.secret_fields().items():
            assert value == theirs[name], (slug, name)
        assert SECRET not in json.dumps(ours.public_view()), slug


async def test_a_prefect_custom_webhook_block_sends(
    prefect_api: str,
    orchestrator: OrchestratorClient,
    store: Store,
    http: httpx.AsyncClient,
    web: RecordingServer,
) -> None:
    block_id = _save(prefect_api, _prefect_blocks(web)["custom-webhook"])
    action = _notify(block_id, "down", "{{ event.event }}")
    await runners(store, http, orchestrator)["send-notification"](run_of(action))
    (sent,) = web.on(f"/custom/{SECRET}")
    assert sent.json() == {"text": "down: prefect.flow-run.Failed"}


async def test_a_prefect_discord_block_sends(
    prefect_api: str,
    orchestrator: OrchestratorClient,
    store: Store,
    http: httpx.AsyncClient,
    wire: Interceptor,
) -> None:
    block_id = _save(prefect_api, _prefect_blocks(wire.server)["discord-webhook"])
    action = _notify(block_id, "down", "it broke")
    await runners(store, http, orchestrator)["send-notification"](run_of(action))
    (sent,) = wire.sent
    assert sent.url == f"https://discord.com/api/webhooks/4242/{SECRET}"
    assert sent.json()["content"] == "down\r\nit broke"
