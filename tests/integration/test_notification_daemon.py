"""The new block types through the whole daemon: a published event fires an automation
whose ``send-notification`` goes through a custom webhook and a Mattermost block (sent by
Apprise inside the executor actors) to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit
from uuid import uuid4

import pytest

from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, event_doc, wait_for
from tests.transport.notify_servers import RecordingServer

pytestmark = pytest.mark.integration

SECRET = "tok-daemon-5e6f"


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    running = RecordingServer()
    yield running
    running.close()


@pytest.fixture
def client(daemon: DaemonThread) -> Iterator[Client]:
    with Client(daemon.rpc_url, timeout_s=30) as c:
        yield c


def test_custom_webhook_and_mattermost_blocks_notify(
    client: Client, server: RecordingServer
) -> None:
    custom = client.create_block(
        {
            "block_type_slug": "custom-webhook",
            "name": f"hook-{uuid4().hex[:8]}",
            "data": {
                "name": "ops",
                "url": server.url("/custom/{{ token }}"),
                "json_data": {"text": "{{ subject }} | {{ body }}"},
                "secrets": {"token": SECRET},
            },
        }
    )
    parts = urlsplit(server.url("/"))
    mattermost = client.create_block(
        {
            "block_type_slug": "mattermost-webhook",
            "name": f"mm-{uuid4().hex[:8]}",
            "data": {"hostname": parts.hostname, "port": parts.port, "token": SECRET},
        }
    )
    assert SECRET not in str(client.list_blocks("custom-webhook"))
    actions = [
        {
            "type": "send-notification",
            "block_document_id": str(block.id),
            "subject": "{{ event.resource.id }} failed",
            "body": "seen by {{ automation.name }}",
        }
        for block in (custom, mattermost)
    ]
    client.create_automation(
        {
            "name": "tell everyone",
            "trigger": {
                "type": "event",
                "expect": ["test.notify.blocks"],
                "threshold": 1,
                "within": 0,
            },
            "actions": actions,
        }
    )
    client.emit([event_doc("test.notify.blocks", "prefect.flow-run.7")])
    (hook,) = wait_for(lambda: server.on(f"/custom/{SECRET}"), what="the custom webhook")
    assert hook.json() == {"text": "prefect.flow-run.7 failed | seen by tell everyone"}
    (post,) = wait_for(lambda: server.on(f"/hooks/{SECRET}"), what="the Mattermost post")
    assert post.json()["text"] == "prefect.flow-run.7 failed\r\nseen by tell everyone"
