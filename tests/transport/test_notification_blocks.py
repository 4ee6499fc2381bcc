"""Every Prefect notification block type, sent through ``send-notification``.

Custom webhooks and Mattermost go to a real HTTP server on 127.0.0.1; Discord,
PagerDuty, Opsgenie, SendGrid and Twilio (SaaS endpoints) are caught at the HTTP
boundary (``tests/transport/intercept.py``) and checked as addressed, then answered
by the local server. Email and Slack/Teams are covered by ``test_notify.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import httpx
import pytest
from pydantic import ValidationError

from marmot.actors.action_runs import ActionFailed, TransientFailure
from marmot.actors.store import Store
from marmot.engine.models.blocks import BLOCK_TYPES, BlockDocument, block_from_prefect
from marmot.engine.models.service_blocks import fill_placeholders
from marmot.engine.triggers.firing import MetricReading
from marmot.transport.apprise_notify import PAGERDUTY_BODY_DETAIL, send_through_apprise
from marmot.transport.custom_webhook import custom_webhook_request
from tests.transport.intercept import Interceptor, intercepting
from tests.transport.notify_servers import RecordingServer, serving
from tests.transport.test_notification_runners import (
    PrefectBlocks,
    notify,
    run_of,
    runners,
    save,
)


def keep(store: Store, slug: str, block_name: str, **data: Any) -> BlockDocument:
    """Store a block (``save`` cannot take a custom webhook's own ``name`` field)."""
    document = {"block_type_slug": slug, "name": block_name, "data": data}
    return store.blocks.create(BlockDocument.model_validate(document))


pytestmark = pytest.mark.anyio

SECRET = "tok-9f8e7d6c5b4a"


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
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        yield client


def block(slug: str, **data: Any) -> BlockDocument:
    return BlockDocument.model_validate({"block_type_slug": slug, "name": "ops", "data": data})


# -- the types and their validation ---------------------------------------------------


def test_every_prefect_notification_type_is_known() -> None:
    assert {
        "slack-webhook",
        "ms-teams-webhook",
        "email",
        "custom-webhook",
        "discord-webhook",
        "mattermost-webhook",
        "pager-duty-webhook",
        "opsgenie-webhook",
        "sendgrid-email",
        "twilio-sms",
    } <= set(BLOCK_TYPES)


@pytest.mark.parametrize(
    ("slug", "data", "problem"),
    [
        ("discord-webhook", {"webhook_id": "1"}, "webhook_token"),
        ("mattermost-webhook", {"hostname": "mm", "token": "t", "port": 0}, "port"),
        (
            "pager-duty-webhook",
            {"integration_key": "k", "api_key": "a", "region_name": "ap"},
            "region_name",
        ),
        ("opsgenie-webhook", {"apikey": "k", "target_user": "not-a-list"}, "target_user"),
        (
            "sendgrid-email",
            {"api_key": "k", "sender_email": "me", "to_emails": ["a@b.io"]},
            "sender_email",
        ),
        (
            "sendgrid-email",
            {"api_key": "k", "sender_email": "a@b.io", "to_emails": []},
            "to_emails",
        ),
        (
            "twilio-sms",
            {
                "account_sid": "XY12",
                "auth_token": "t",
                "from_phone_number": "+15551234567",
                "to_phone_numbers": ["+15557654321"],
            },
            "AC",
        ),
        (
            "twilio-sms",
            {
                "account_sid": "AC12",
                "auth_token": "t",
                "from_phone_number": "+15551234567",
                "to_phone_numbers": ["12"],
            },
            "phone",
        ),
        (
            "custom-webhook",
            {"name": "n", "url": "http://h", "json_data": {"a": 1}, "form_data": {"b": "2"}},
            "not both",
        ),
        ("custom-webhook", {"name": "n", "url": "http://h/{{ token }}"}, "token"),
    ],
)
def test_each_type_checks_its_fields(slug: str, data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        block(slug, **data)


def test_custom_webhook_placeholders_may_name_its_secrets() -> None:
    made = block(
        "custom-webhook",
        name="n",
        url="http://h/{{ token }}",
        secrets={"token": SECRET},
    )
    assert made.public_view()["data"]["secrets"] == {"token": "********"}
    assert SECRET not in json.dumps(made.public_view())


@pytest.mark.parametrize(
    ("slug", "secret_fields"),
    [
        ("discord-webhook", {"webhook_id": "1234", "webhook_token": SECRET}),
        ("pager-duty-webhook", {"integration_key": SECRET, "api_key": "a" + SECRET}),
        ("opsgenie-webhook", {"apikey": SECRET}),
        ("mattermost-webhook", {"token": SECRET}),
    ],
)
def test_secrets_are_masked_in_listings(
    store: Store, slug: str, secret_fields: dict[str, str]
) -> None:
    extra = {"hostname": "mm.example.com"} if slug == "mattermost-webhook" else {}
    saved = store.blocks.create(block(slug, **secret_fields, **extra))
    listed = [b.public_view() for b in store.blocks.list(slug)]
    assert all(listed[0]["data"][f] == "********" for f in secret_fields)
    assert SECRET not in json.dumps(listed)
    revealed = store.blocks.read(saved.id, include_secrets=True).data.secret_fields()
    assert revealed == secret_fields


@pytest.mark.parametrize(
    "template",
    [
        "{{ subject }}",
        "{{subject}}: {{ body }} from {{ name }}",
        {"text": "{{ body }}", "n": {"deep": ["{{ name }}", "{{ missing }}", 3]}},
        {"gone": "{{ missing }}", "kept": "a {{ missing }} b", "token": "{{ token }}"},
        "{{ nested.key }} and {{ token }}",
        "plain",
        None,
    ],
)
def test_placeholders_fill_as_prefects_apply_values(template: Any) -> None:
    from prefect.utilities.templating import apply_values

    values = {"subject": "S", "body": "B", "name": "N", "token": 7, "nested": {"key": "v"}}
    theirs = apply_values(template, dict(values))
    assert fill_placeholders(template, values) == theirs


# -- custom webhook: a real server ------------------------------------------------------


async def test_custom_webhook_sends_templated_json_with_its_secrets(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    saved = keep(
        store,
        "custom-webhook",
        "hook",
        name="ops-hook",
        url=web.url("/hook/{{ token }}"),
        method="put",
        params={"source": "{{ name }}"},
        json_data={"text": "{{ subject }}\n{{ body }}", "token": "{{ token }}", "n": 3},
        headers={"X-Token": "{{ token }}"},
        cookies={"session": "{{ token }}"},
        secrets={"token": SECRET},
    )
    result = await runners(store, http)["send-notification"](run_of(notify(saved)))
    (sent,) = web.requests
    assert sent.method == "PUT"
    assert urlsplit(sent.path).path == f"/hook/{SECRET}"
    assert parse_qs(urlsplit(sent.path).query) == {"source": ["ops-hook"]}
    assert sent.json() == {
        "text": "etl watch fired\nprefect.flow-run.Failed happened",
        "token": SECRET,
        "n": 3,
    }
    assert sent.headers["x-token"] == SECRET
    assert sent.headers["cookie"] == f"session={SECRET}"
    assert sent.headers["idempotency-key"] == "firing-1:0"
    assert sent.headers["user-agent"] == "Marmot Notifications"
    assert SECRET not in result.detail
    assert result.extra["block_type_slug"] == "custom-webhook"


async def test_custom_webhook_sends_a_form_or_a_raw_body(
    http: httpx.AsyncClient, web: RecordingServer
) -> None:
    from marmot.transport.custom_webhook import send_custom_webhook

    form = block("custom-webhook", name="n", url=web.url("/form"), form_data={"m": "{{ body }}"})
    raw = block("custom-webhook", name="n", url=web.url("/raw"), form_data="{{ subject }}!")
    await send_custom_webhook(http, form, "S", "hello world")
    await send_custom_webhook(http, raw, None, "B")
    assert web.on("/form")[0].headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(web.on("/form")[0].body.decode()) == {"m": ["hello world"]}
    # Prefect's rule: no subject renders as "null".
    assert web.on("/raw")[0].body == b"null!"


async def test_custom_webhook_request_matches_prefects_arguments() -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    fields = {
        "name": "n",
        "url": "https://example.com/{{ token }}",
        "params": {"q": "{{ subject }}"},
        "json_data": {"t": "{{ body }}", "k": "{{ token }}", "list": ["{{ name }}"]},
        "headers": {"A": "b {{ token }}"},
    }
    theirs = CustomWebhookNotificationBlock(**fields, secrets={"token": "x1"})
    expected = theirs._build_request_args("the body", "the subject")
    ours = custom_webhook_request(
        block("custom-webhook", **fields, secrets={"token": "x1"}).data,  # type: ignore[arg-type]
        "the subject",
        "the body",
    )
    for key in ("method", "url", "params", "json", "headers"):
        assert ours[key] == expected[key], key


async def test_custom_webhook_failures_are_reported_without_secrets(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    web.reply(f"/down/{SECRET}", 503, f"upstream {SECRET} is down")
    web.reply(f"/bad/{SECRET}", 400, f"no such token {SECRET}")
    run = runners(store, http)["send-notification"]
    down = keep(
        store,
        "custom-webhook",
        "down",
        name="n",
        url=web.url("/down/{{ t }}"),
        secrets={"t": SECRET},
    )
    bad = keep(
        store, "custom-webhook", "bad", name="n", url=web.url("/bad/{{ t }}"), secrets={"t": SECRET}
    )
    with pytest.raises(TransientFailure, match="HTTP 503") as transient:
        await run(run_of(notify(down)))
    with pytest.raises(ActionFailed, match="HTTP 400") as failed:
        await run(run_of(notify(bad)))
    assert SECRET not in str(transient.value) + str(failed.value)


async def test_custom_webhook_refuses_private_urls_when_asked(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    saved = keep(
        store, "custom-webhook", "priv", name="n", url=web.url("/x"), allow_private_urls=False
    )
    with pytest.raises(ActionFailed, match="private address"):
        await runners(store, http)["send-notification"](run_of(notify(saved)))
    assert web.requests == []


async def test_a_prefect_custom_webhook_block_is_used_by_id(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    # The failing case: a custom-webhook block that lives on Prefect.
    document = {
        "id": str(uuid4()),
        "name": "prefect-hook",
        "block_type": {"slug": "custom-webhook"},
        "data": {
            "name": "from prefect",
            "url": web.url("/prefect"),
            "method": "POST",
            "json_data": {"text": "{{ subject }}: {{ body }}"},
            "secrets": {},
            "timeout": 10,
            "allow_private_urls": True,
            "params": None,
            "form_data": None,
            "headers": None,
            "cookies": None,
        },
    }
    prefect = PrefectBlocks(document)
    action = notify(block_from_prefect(document))
    await runners(store, http, prefect)["send-notification"](run_of(action))
    assert web.on("/prefect")[0].json() == {
        "text": "etl watch fired: prefect.flow-run.Failed happened"
    }


# -- Mattermost: a real server ----------------------------------------------------------


async def test_mattermost_posts_to_the_servers_hook(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    host, port = urlsplit(web.url("/")).hostname, urlsplit(web.url("/")).port
    saved = save(
        store,
        "mattermost-webhook",
        "mm",
        hostname=host,
        port=port,
        token=SECRET,
        botname="marmot",
        channels=["ops"],
        path="/chat",
    )
    result = await runners(store, http)["send-notification"](run_of(notify(saved)))
    (sent,) = web.requests
    assert (sent.method, sent.path) == ("POST", f"/chat/hooks/{SECRET}")
    assert sent.headers["content-type"].startswith("application/json")
    payload = sent.json()
    assert payload["text"] == "etl watch fired\r\nprefect.flow-run.Failed happened"
    assert payload["channel"] == "ops"
    assert payload["username"] == "marmot"
    assert "Mattermost" in result.detail


async def test_mattermost_refusal_is_an_action_failure_with_apprises_reason(
    web: RecordingServer,
) -> None:
    web.reply(f"/hooks/{SECRET}", 403, "forbidden")
    parts = urlsplit(web.url("/"))
    hook = block("mattermost-webhook", hostname=parts.hostname, port=parts.port, token=SECRET)
    with pytest.raises(ActionFailed, match="403") as failed:
        await send_through_apprise(hook, "S", "B", timeout_s=5.0)
    assert SECRET not in str(failed.value)


# -- SaaS services: the intercepted request ---------------------------------------------


async def test_discord_posts_to_the_webhook(
    store: Store, http: httpx.AsyncClient, wire: Interceptor
) -> None:
    saved = save(
        store,
        "discord-webhook",
        "dc",
        webhook_id="4242",
        webhook_token=SECRET,
        botname="marmot",
        tts=True,
    )
    await runners(store, http)["send-notification"](run_of(notify(saved)))
    (sent,) = wire.sent
    assert (sent.method, sent.url) == ("POST", f"https://discord.com/api/webhooks/4242/{SECRET}")
    assert sent.headers["content-type"].startswith("application/json")
    payload = sent.json()
    assert payload["content"] == "etl watch fired\r\nprefect.flow-run.Failed happened"
    assert payload["tts"] is True
    assert payload["username"] == "marmot"


async def test_pagerduty_carries_the_body_in_custom_details(wire: Interceptor) -> None:
    pd = block(
        "pager-duty-webhook",
        integration_key="routing-" + SECRET,
        api_key="api-" + SECRET,
        notify_type="failure",
        region_name="eu",
        group="etl",
        custom_details={"team": "data"},
        clickable_url="https://ui.example.com/runs/1",
    )
    await send_through_apprise(pd, "Flow failed", "run 42 crashed", timeout_s=5.0)
    (sent,) = wire.sent
    assert (sent.method, sent.url) == ("POST", "https://events.eu.pagerduty.com/v2/enqueue")
    assert sent.headers["authorization"] == f"Token token=api-{SECRET}"
    payload = sent.json()
    assert payload["routing_key"] == "routing-" + SECRET
    assert payload["event_action"] == "trigger"
    assert payload["payload"]["summary"].strip() == "Flow failed"
    assert payload["payload"]["severity"] == "critical"
    assert payload["payload"]["group"] == "etl"
    assert payload["payload"]["custom_details"] == {
        "team": "data",
        PAGERDUTY_BODY_DETAIL: "run 42 crashed",
    }
    assert payload["links"][0]["href"] == "https://ui.example.com/runs/1"


async def test_opsgenie_creates_an_alert_for_its_targets(
    web: RecordingServer, wire: Interceptor
) -> None:
    web.reply("/v2/alerts", 202, json.dumps({"requestId": "r-1"}))
    og = block(
        "opsgenie-webhook",
        apikey=SECRET,
        target_team=["ops"],
        target_user=["ann@example.com"],
        tags=["etl"],
        priority=2,
        alias="etl-down",
        # One request for all targets: unbatched, Apprise spaces requests 5.5 s apart.
        batch=True,
    )
    await send_through_apprise(og, "Flow failed", "run 42 crashed", timeout_s=5.0)
    sent = wire.sent[0]
    assert (sent.method, sent.url) == ("POST", "https://api.opsgenie.com/v2/alerts")
    assert sent.headers["authorization"] == f"GenieKey {SECRET}"
    payload = sent.json()
    assert (payload["message"], payload["description"]) == ("Flow failed", "run 42 crashed")
    assert payload["priority"] == "P2"
    assert payload["tags"] == ["etl"]
    assert payload["alias"] == "etl-down"
    responders = [r for s in wire.sent for r in s.json()["responders"]]
    assert {"type": "team", "name": "ops"} in responders
    assert {"type": "user", "username": "ann@example.com"} in responders


async def test_sendgrid_mails_through_its_api(wire: Interceptor) -> None:
    sg = block(
        "sendgrid-email",
        api_key="SG." + SECRET,
        sender_email="marmot@example.com",
        to_emails=["ann@example.com", "bob@example.com"],
    )
    await send_through_apprise(sg, "Flow failed", "run 42 crashed", timeout_s=5.0)
    sent = wire.sent[0]
    assert (sent.method, sent.url) == ("POST", "https://api.sendgrid.com/v3/mail/send")
    assert sent.headers["authorization"] == f"Bearer SG.{SECRET}"
    payload = sent.json()
    assert payload["from"] == {"email": "marmot@example.com"}
    assert payload["subject"] == "Flow failed"
    assert payload["content"][0]["value"] == "run 42 crashed"
    recipients = {
        to["email"] for s in wire.sent for p in s.json()["personalizations"] for to in p["to"]
    }
    assert recipients == {"ann@example.com", "bob@example.com"}


async def test_twilio_texts_each_number(wire: Interceptor) -> None:
    sid = "AC0123456789abcdef"
    sms = block(
        "twilio-sms",
        account_sid=sid,
        auth_token=SECRET.replace("-", ""),
        from_phone_number="+15551234567",
        to_phone_numbers=["+15557654321", "+15550001111"],
    )
    await send_through_apprise(sms, "Flow failed", "run 42", timeout_s=5.0)
    assert [s.url for s in wire.sent] == [
        f"https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json"
    ] * 2
    first = wire.sent[0]
    token = SECRET.replace("-", "")
    assert (
        first.headers["authorization"]
        == "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()
    )
    assert first.form()["From"] == ["+15551234567"]
    assert first.form()["Body"] == ["Flow failed\r\nrun 42"]
    assert {s.form()["To"][0] for s in wire.sent} == {"+15557654321", "+15550001111"}


async def test_a_refused_saas_call_fails_with_the_reason_and_no_secret(
    web: RecordingServer, wire: Interceptor
) -> None:
    web.reply(f"/api/webhooks/4242/{SECRET}", 401, "bad token")
    dc = block("discord-webhook", webhook_id="4242", webhook_token=SECRET)
    with pytest.raises(ActionFailed, match="401") as failed:
        await send_through_apprise(dc, "S", "B", timeout_s=5.0)
    assert "discord-webhook 'ops'" in str(failed.value)
    assert SECRET not in str(failed.value)


async def test_a_service_that_hangs_times_out_as_an_action_failure(
    web: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    Interceptor(web, to_path="/hang").install(monkeypatch)
    dc = block("discord-webhook", webhook_id="4242", webhook_token=SECRET)
    with pytest.raises(ActionFailed) as failed:
        await send_through_apprise(dc, "S", "B", timeout_s=1.0)
    assert not isinstance(failed.value, TransientFailure)
    assert "time" in str(failed.value) or "connection" in str(failed.value).lower()


# -- a metric trigger's reading in a notification ---------------------------------------


async def test_a_notification_quotes_the_metric_that_fired(
    store: Store, http: httpx.AsyncClient, web: RecordingServer
) -> None:
    saved = keep(
        store,
        "custom-webhook",
        "metric-hook",
        name="n",
        url=web.url("/metric"),
        json_data={"text": "{{ body }}"},
    )
    action = notify(
        saved,
        body="{{ metric.name }} {{ metric.value }} {{ metric.operator }} {{ metric.threshold }}",
    )
    run = run_of(action)
    reading = MetricReading("duration", ">", 60.0, 100.5)
    run = replace(run, firing=replace(run.firing, metric=reading))
    await runners(store, http)["send-notification"](run)
    assert web.on("/metric")[0].json() == {"text": "duration 100.5 > 60.0"}


def test_a_number_given_for_a_text_field_is_taken_as_its_digits() -> None:
    # `--set webhook_id=4242` parses as JSON: Discord's ids are all digits.
    made = block("discord-webhook", webhook_id=4242, webhook_token=123)
    assert made.data.secret_fields() == {"webhook_id": "4242", "webhook_token": "123"}
    with pytest.raises(ValidationError):
        block("discord-webhook", webhook_id=True, webhook_token="t")
