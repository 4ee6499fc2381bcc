"""``send-notification`` and ``call-webhook`` runners end to end: blocks in a real
store file, templates rendered, delivery to real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import jinja2
import pytest

from marmot.actors.action_runs import (
    ActionFailed,
    ActionResult,
    ActionRun,
    Runner,
    TransientFailure,
)
from marmot.actors.store import Store
from marmot.config import MarmotConfig
from marmot.engine.errors import NotFound
from marmot.engine.models.actions import Action, parse_action
from marmot.engine.models.automations import Automation
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.models.events import Event
from marmot.engine.triggers.firing import Firing
from marmot.transport.actions.notifications import BlockResolver, notification_runners
from marmot.transport.notify import slack_message, teams_message
from tests.engine.factories import event as make_event
from tests.transport.notify_servers import MailServer, RecordingServer, mailing, serving

pytestmark = pytest.mark.anyio

SLACK_TOKEN = "T000/B000/slack-secret-token"
HEADER_SECRET = "Bearer webhook-header-secret"
CONFIG = MarmotConfig.model_validate({"executors": {"action_timeout_s": 5.0}})


class JinjaRenderer:
    """Renders with plain Jinja over the run's automation and event."""

    async def render(self, source: str, run: ActionRun) -> str:
        return jinja2.Template(source).render(automation=run.automation, event=run.event)


def _renderer() -> Any:
    # The real renderer when it is there; the plain Jinja one otherwise.
    try:
        from marmot.transport.actions.rendering import Renderer
    except ImportError:
        return JinjaRenderer()
    return Renderer(CONFIG, None)


class PrefectBlocks:
    """Block documents as a Prefect server returns them (``BlockDocumentReader``)."""

    def __init__(self, *documents: dict[str, Any]) -> None:
        self.documents = {UUID(d["id"]): d for d in documents}
        self.asked: list[UUID] = []

    async def read_block_document(self, id: UUID, /) -> dict[str, Any]:
        self.asked.append(id)
        if id not in self.documents:
            raise NotFound(f"block document {id} not found")
        return self.documents[id]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def web() -> Iterator[RecordingServer]:
    yield from serving()


@pytest.fixture
def mail() -> Iterator[MailServer]:
    yield from mailing()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "marmot.db") as opened:
        yield opened


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        yield client


def runners(
    store: Store, http: httpx.AsyncClient, orchestrator: PrefectBlocks | None = None
) -> dict[str, Runner]:
    return notification_runners(
        BlockResolver(store, orchestrator), _renderer(), http, CONFIG.executors
    )


def save(store: Store, slug: str, name: str, **data: Any) -> BlockDocument:
    document = {"block_type_slug": slug, "name": name, "data": data}
    return store.blocks.create(BlockDocument.model_validate(document))


def run_of(action: dict[str, Any], *, key: str = "firing-1:0") -> ActionRun:
    parsed: Action = parse_action(action)
    automation = Automation.model_validate(
        {
            "name": "etl watch",
            "trigger": {"type": "event", "expect": ["prefect.flow-run.Failed"]},
            "actions": [action],
        }
    )
    triggering: Event = make_event("prefect.flow-run.Failed", 0, resource_id="prefect.flow-run.42")
    firing = Firing(
        id=uuid4(),
        automation_id=automation.id,
        trigger_path="trigger",
        labels={},
        triggering_event=triggering,
        fired_us=0,
    )
    return ActionRun(parsed, automation, firing, triggering, index=0, key=key)


def notify(block: BlockDocument, **fields: Any) -> dict[str, Any]:
    return {
        "type": "send-notification",
        "block_document_id": str(block.id),
        "subject": "{{ automation.name }} fired",
        "body": "{{ event.event }} happened",
        **fields,
    }


def call(block_id: UUID, payload: str) -> dict[str, Any]:
    return {"type": "call-webhook", "block_document_id": str(block_id), "payload": payload}


def _assert_no_secrets(result: ActionResult, *secrets: str) -> None:
    shown = f"{result.detail} {dict(result.extra)}"
    for secret in secrets:
        assert secret not in shown


async def test_notification_to_slack_sends_the_rendered_message(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    block = save(store, "slack-webhook", "ops", url=web.url(f"/services/{SLACK_TOKEN}"))

    result = await runners(store, http)["send-notification"](run_of(notify(block)))

    [request] = web.requests
    assert request.json() == slack_message("etl watch fired", "prefect.flow-run.Failed happened")
    assert result.detail == "sent to slack-webhook 'ops' (HTTP 200)"
    assert result.extra["block_document_id"] == str(block.id)
    _assert_no_secrets(result, SLACK_TOKEN)


async def test_notification_to_teams_sends_the_rendered_card(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    web.reply("/workflows/run", 202)
    block = save(store, "ms-teams-webhook", "ops", url=web.url("/workflows/run"))

    result = await runners(store, http)["send-notification"](run_of(notify(block)))

    assert web.requests[0].json() == teams_message(
        "etl watch fired", "prefect.flow-run.Failed happened"
    )
    assert result.detail == "sent to ms-teams-webhook 'ops' (HTTP 202)"


async def test_notification_by_email_reaches_the_smtp_server(
    store: Store, http: httpx.AsyncClient, mail: MailServer
) -> None:
    block = save(
        store,
        "email",
        "on-call",
        smtp_server="127.0.0.1",
        smtp_port=mail.port,
        smtp_type="none",
        email_from="marmot@example.com",
        email_to=["oncall@example.com"],
    )
    send = runners(store, http)["send-notification"]

    result = await send(run_of(notify(block), key="firing-7:0"))
    await send(run_of(notify(block), key="firing-7:0"))

    first, second = (message for _, message in mail.messages)
    assert first["Subject"] == "etl watch fired"
    assert first["To"] == "oncall@example.com"
    payload = first.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.decode().strip() == "prefect.flow-run.Failed happened"
    # The Message-ID comes from the idempotency key: a repeat carries the same one.
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Message-ID"].endswith("@marmot>")
    assert result.detail == "sent to email 'on-call' (mailed 1 recipient(s))"


async def test_notification_through_a_webhook_block_posts_subject_and_body(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    block = save(store, "webhook", "hook", url=web.url("/n"), headers={"X-Key": HEADER_SECRET})

    result = await runners(store, http)["send-notification"](run_of(notify(block)))

    [request] = web.requests
    assert request.json() == {
        "subject": "etl watch fired",
        "body": "prefect.flow-run.Failed happened",
    }
    assert request.headers["x-key"] == HEADER_SECRET
    _assert_no_secrets(result, HEADER_SECRET)


async def test_call_webhook_sends_the_rendered_payload(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    web.reply("/hook", 201, "created")
    block = save(
        store, "webhook", "hook", method="PUT", url=web.url("/hook"), headers={"A": HEADER_SECRET}
    )
    payload = '{"automation": "{{ automation.name }}", "event": "{{ event.event }}"}'

    result = await runners(store, http)["call-webhook"](run_of(call(block.id, payload)))

    [request] = web.requests
    assert request.method == "PUT"
    assert request.json() == {"automation": "etl watch", "event": "prefect.flow-run.Failed"}
    assert request.headers["content-type"] == "application/json"
    assert result.detail == "called webhook 'hook' (HTTP 201)"
    assert result.extra["status_code"] == 201
    assert result.extra["response_body"] == "created"
    _assert_no_secrets(result, HEADER_SECRET, "/hook")


async def test_call_webhook_with_a_notification_block_fails_with_the_reason(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    block = save(store, "slack-webhook", "ops", url=web.url("/s"))

    with pytest.raises(ActionFailed, match=r"slack-webhook 'ops' is not a webhook block"):
        await runners(store, http)["call-webhook"](run_of(call(block.id, "{}")))
    assert web.requests == []


async def test_a_failing_server_makes_the_runner_fail_transiently(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    web.reply("/s", 503, "try later")
    block = save(store, "slack-webhook", "ops", url=web.url("/s"))

    with pytest.raises(TransientFailure, match="HTTP 503"):
        await runners(store, http)["send-notification"](run_of(notify(block)))


async def test_an_unknown_block_without_an_orchestrator_fails(
    store: Store, http: httpx.AsyncClient
) -> None:
    missing = uuid4()

    with pytest.raises(ActionFailed, match=f"block document {missing} does not exist"):
        await runners(store, http)["call-webhook"](run_of(call(missing, "{}")))


async def test_a_block_not_stored_here_is_read_from_the_orchestrator(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    block_id = uuid4()
    prefect = PrefectBlocks(
        {
            "id": str(block_id),
            "name": "prefect-hook",
            "data": {
                "method": "PATCH",
                "url": web.url("/from-prefect"),
                "headers": {"X-From": "prefect"},
                "allow_private_urls": True,
                "verify": True,
            },
            "block_type_id": str(uuid4()),
            "block_type": {"id": str(uuid4()), "name": "Webhook", "slug": "webhook"},
            "block_schema_id": str(uuid4()),
            "block_document_references": {},
            "is_anonymous": False,
        }
    )

    result = await runners(store, http, prefect)["call-webhook"](
        run_of(call(block_id, "plain text"))
    )

    assert prefect.asked == [block_id]
    [request] = web.requests
    assert (request.method, request.path, request.body) == ("PATCH", "/from-prefect", b"plain text")
    assert request.headers["x-from"] == "prefect"
    assert result.detail == "called webhook 'prefect-hook' (HTTP 200)"


async def test_a_stored_block_is_used_without_asking_the_orchestrator(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    block = save(store, "webhook", "local", url=web.url("/local"))
    prefect = PrefectBlocks()

    await runners(store, http, prefect)["call-webhook"](run_of(call(block.id, "{}")))

    assert prefect.asked == []
    assert [r.path for r in web.requests] == ["/local"]


async def test_an_orchestrator_block_of_an_unknown_type_fails_naming_it(
    store: Store, http: httpx.AsyncClient
) -> None:
    # pager-duty-webhook is sent through Apprise now; Prefect's JSON block
    # still cannot send anything.
    block_id = uuid4()
    prefect = PrefectBlocks(
        {
            "id": str(block_id),
            "name": "settings",
            "data": {"value": {"a": 1}},
            "block_type": {"slug": "json"},
        }
    )

    with pytest.raises(ActionFailed, match="'json' is not one Marmot can use"):
        await runners(store, http, prefect)["send-notification"](run_of(notify_id(block_id)))


async def test_an_orchestrator_block_with_obfuscated_secrets_fails(
    store: Store, http: httpx.AsyncClient
) -> None:
    block_id = uuid4()
    prefect = PrefectBlocks(
        {
            "id": str(block_id),
            "name": "ops",
            "data": {"url": "********"},
            "block_type": {"slug": "slack-webhook"},
        }
    )

    with pytest.raises(ActionFailed, match="include_secrets"):
        await runners(store, http, prefect)["send-notification"](run_of(notify_id(block_id)))


async def test_a_block_missing_everywhere_fails(store: Store, http: httpx.AsyncClient) -> None:
    missing = uuid4()

    with pytest.raises(ActionFailed, match="does not exist here or on the orchestrator"):
        await runners(store, http, PrefectBlocks())["send-notification"](run_of(notify_id(missing)))


async def test_a_runner_refuses_an_action_of_another_type(
    store: Store, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ActionFailed, match="call-webhook cannot run a send-notification"):
        await runners(store, http)["call-webhook"](run_of(notify_id(uuid4())))


def notify_id(block_id: UUID) -> dict[str, Any]:
    return {"type": "send-notification", "block_document_id": str(block_id), "body": "b"}
