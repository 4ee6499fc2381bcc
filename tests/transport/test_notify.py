"""Delivery through blocks against real servers on 127.0.0.1: an HTTP server that
records Slack, Teams and webhook calls, and an aiosmtpd SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from marmot.actors.action_runs import ActionFailed, TransientFailure
from marmot.engine.models.blocks import BlockDocument
from marmot.transport.notify import (
    call_webhook,
    retry_after_s,
    send_email,
    send_notification,
    slack_message,
    teams_message,
    webhook_body,
)
from tests.transport.notify_servers import (
    MailServer,
    RecordingServer,
    free_port,
    mailing,
    self_signed_context,
    serving,
)

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-token-in-the-path"


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
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        yield client


def block(slug: str, name: str = "ops", **data: Any) -> BlockDocument:
    return BlockDocument.model_validate({"block_type_slug": slug, "name": name, "data": data})


def hook(server: RecordingServer, path: str = f"/hook/{SECRET}", **data: Any) -> BlockDocument:
    return block("webhook", "hook", url=server.url(path), **data)


def mailer(server: MailServer, **data: Any) -> BlockDocument:
    fields: dict[str, Any] = {
        "smtp_server": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_type": "INSECURE",
        "email_from": "Marmot <marmot@example.com>",
        "email_to": ["ops@example.com", "dev@example.com"],
        **data,
    }
    return block("email", "mail", **fields)


# -- message formats -----------------------------------------------------------------


def test_slack_message_has_a_header_sections_and_a_fallback() -> None:
    message = slack_message("Run failed\n(again)", "*etl* failed\nsee logs")

    header = {"type": "plain_text", "text": "Run failed (again)", "emoji": True}
    section = {"type": "mrkdwn", "text": "*etl* failed\nsee logs"}
    assert message["blocks"] == [
        {"type": "header", "text": header},
        {"type": "section", "text": section},
    ]
    assert message["text"] == "Run failed (again)\n*etl* failed\nsee logs"


def test_slack_message_keeps_to_slacks_limits() -> None:
    body = "\n".join(f"line {i} " + "x" * 90 for i in range(2_000))

    message = slack_message("s" * 400, body)

    header, *sections = message["blocks"]
    assert len(header["text"]["text"]) == 150
    assert len(message["blocks"]) == 50
    assert all(len(s["text"]["text"]) <= 3_000 for s in sections)
    assert sections[0]["text"]["text"].startswith("line 0 ")
    assert sections[-1]["text"]["text"].endswith("…")


def test_slack_message_without_subject_or_body_still_has_text() -> None:
    assert slack_message("", "") == {"text": " ", "blocks": []}


def test_teams_message_is_an_adaptive_card_with_the_subject_as_heading() -> None:
    message = teams_message("Deploy failed", "Run **etl** failed", wrap=False)

    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    heading, text = card["body"]
    assert heading["text"] == "Deploy failed" and heading["weight"] == "Bolder"
    assert text == {"type": "TextBlock", "text": "Run **etl** failed", "wrap": False}


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        ('{"a": 1}', "application/json"),
        ("[1, 2]", "application/json"),
        ("42", "text/plain; charset=utf-8"),
        ('"just a string"', "text/plain; charset=utf-8"),
        ("plain words", "text/plain; charset=utf-8"),
        ("", None),
    ],
)
def test_webhook_body_is_the_payload_labelled_json_only_for_objects_and_arrays(
    payload: str, content_type: str | None
) -> None:
    assert webhook_body(payload) == (payload.encode(), content_type)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    assert retry_after_s("7", now) == 7.0
    assert retry_after_s("Sun, 01 Mar 2026 09:00:30 GMT", now) == 30.0
    assert retry_after_s("Sun, 01 Mar 2026 08:00:00 GMT", now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


# -- HTTP delivery -------------------------------------------------------------------


async def test_slack_notification_posts_the_message_json(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    slack = block("slack-webhook", url=web.url("/services/T0/B0/x"))

    delivery = await send_notification(http, slack, "Run failed", "*etl* failed")

    [request] = web.requests
    assert request.method == "POST" and request.path == "/services/T0/B0/x"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == slack_message("Run failed", "*etl* failed")
    assert delivery.status == "HTTP 200" and delivery.status_code == 200


async def test_teams_notification_posts_the_adaptive_card(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    web.reply("/workflows/1", 202)
    teams = block("ms-teams-webhook", url=web.url("/workflows/1"), wrap=False)

    delivery = await send_notification(http, teams, "Deploy failed", "details")

    [request] = web.requests
    assert request.json() == teams_message("Deploy failed", "details", wrap=False)
    assert delivery.status_code == 202


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_webhook_uses_the_blocks_method_and_headers(
    web: RecordingServer, http: httpx.AsyncClient, method: str
) -> None:
    webhook = hook(web, method=method, headers={"Authorization": "Bearer abc", "X-Team": "ops"})

    await call_webhook(http, webhook, '{"event": "x"}')

    [request] = web.requests
    assert request.method == method
    assert request.headers["authorization"] == "Bearer abc"
    assert request.headers["x-team"] == "ops"
    assert request.body == b'{"event": "x"}'
    assert request.headers["content-type"] == "application/json"


async def test_deliveries_carry_the_actions_idempotency_key(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    await call_webhook(http, hook(web), "{}", idempotency_key="f-1:0")
    await send_notification(http, hook(web), "Subject", "Body", idempotency_key="f-1:1")
    # A block that sets its own key keeps it.
    own = hook(web, headers={"idempotency-key": "mine"})
    await call_webhook(http, own, "{}", idempotency_key="f-1:2")
    keys = [request.headers["idempotency-key"] for request in web.requests]
    assert keys == ["f-1:0", "f-1:1", "mine"]


async def test_webhook_sends_text_payloads_as_text(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    await call_webhook(http, hook(web), "flow run etl failed")

    [request] = web.requests
    assert request.body == b"flow run etl failed"
    assert request.headers["content-type"] == "text/plain; charset=utf-8"


async def test_webhook_with_empty_payload_sends_no_body(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    await call_webhook(http, hook(web), "")

    [request] = web.requests
    assert request.body == b""
    assert "content-type" not in request.headers


async def test_webhook_keeps_a_content_type_the_block_sets(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    webhook = hook(web, headers={"content-type": "application/vnd.custom+json"})

    await call_webhook(http, webhook, '{"a": 1}')

    assert web.requests[0].headers["content-type"] == "application/vnd.custom+json"


async def test_webhook_delivery_reports_the_reply(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    web.reply(f"/hook/{SECRET}", 201, '{"accepted": true}')

    delivery = await call_webhook(http, hook(web), "{}")

    assert delivery.status_code == 201
    assert delivery.response_body == '{"accepted": true}'


async def test_webhook_block_notifies_with_subject_and_body_json(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    webhook = hook(web, method="PUT", headers={"X-Key": "k"})

    await send_notification(http, webhook, "Subject", "Body")

    [request] = web.requests
    assert request.method == "PUT" and request.headers["x-key"] == "k"
    assert request.json() == {"subject": "Subject", "body": "Body"}


async def test_503_is_transient_and_names_no_secret(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    web.reply(f"/hook/{SECRET}", 503, "upstream down")

    with pytest.raises(TransientFailure) as caught:
        await call_webhook(http, hook(web), "{}")

    message = str(caught.value)
    assert message == "webhook 'hook' answered HTTP 503: upstream down"
    assert SECRET not in message and "127.0.0.1" not in message


async def test_400_fails_at_once_with_status_and_excerpt(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    web.reply(f"/hook/{SECRET}", 400, "invalid_payload " + "x" * 1_000)

    with pytest.raises(ActionFailed) as caught:
        await call_webhook(http, hook(web), "{}")

    assert not isinstance(caught.value, TransientFailure)
    message = str(caught.value)
    assert message.startswith("webhook 'hook' answered HTTP 400: invalid_payload x")
    assert len(message) < 300


async def test_429_is_transient_with_the_servers_retry_after(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    slack = block("slack-webhook", url=web.url("/slack"))
    web.reply("/slack", 429, "rate_limited", **{"Retry-After": "7"})

    with pytest.raises(TransientFailure) as caught:
        await send_notification(http, slack, "s", "b")

    assert caught.value.retry_after_s == 7.0
    assert "HTTP 429" in str(caught.value)


async def test_a_reply_that_echoes_a_secret_is_scrubbed(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    webhook = hook(web, headers={"Authorization": "Bearer header-secret"})
    web.reply(f"/hook/{SECRET}", 404, f"no route /hook/{SECRET} for Bearer header-secret")

    with pytest.raises(ActionFailed) as caught:
        await call_webhook(http, webhook, "{}")

    message = str(caught.value)
    assert SECRET not in message and "header-secret" not in message
    assert "HTTP 404" in message


async def test_redirects_are_not_followed(web: RecordingServer, http: httpx.AsyncClient) -> None:
    web.reply(f"/hook/{SECRET}", 302, "", Location="/elsewhere")

    with pytest.raises(ActionFailed, match="redirects are not followed"):
        await call_webhook(http, hook(web), "{}")
    assert [r.path for r in web.requests] == [f"/hook/{SECRET}"]


async def test_connection_refused_is_transient(http: httpx.AsyncClient) -> None:
    nowhere = block("slack-webhook", url=f"http://127.0.0.1:{free_port()}/{SECRET}")

    with pytest.raises(TransientFailure) as caught:
        await send_notification(http, nowhere, "s", "b")

    assert str(caught.value).startswith("slack-webhook 'ops' could not be reached")
    assert SECRET not in str(caught.value)


async def test_a_server_that_does_not_answer_in_time_is_transient(web: RecordingServer) -> None:
    async with httpx.AsyncClient(timeout=0.2) as impatient:
        with pytest.raises(TransientFailure, match="did not answer in time"):
            await call_webhook(impatient, hook(web, path="/hang"), "{}")


async def test_private_address_is_refused_when_the_block_forbids_it(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    guarded = block("slack-webhook", url=web.url("/x"), allow_private_urls=False)

    with pytest.raises(ActionFailed, match="private address"):
        await send_notification(http, guarded, "s", "b")
    assert web.requests == []


async def test_a_url_with_an_unknown_scheme_fails_at_once(http: httpx.AsyncClient) -> None:
    odd = block("webhook", "odd", url=f"ftp://example.com/{SECRET}")

    with pytest.raises(ActionFailed) as caught:
        await call_webhook(http, odd, "")

    assert not isinstance(caught.value, TransientFailure)
    assert SECRET not in str(caught.value)


# -- email ---------------------------------------------------------------------------


async def test_email_is_delivered_with_subject_from_to_and_body(mail: MailServer) -> None:
    delivery = await send_email(
        mailer(mail),
        "Run failed\non etl",
        "The flow run failed.\nSee the logs.",
        message_id="<abc@marmot>",
    )

    [(envelope, message)] = mail.messages
    assert envelope.mail_from == "marmot@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "dev@example.com"]
    assert message["Subject"] == "Run failed on etl"
    assert message["From"] == "Marmot <marmot@example.com>"
    assert message["To"] == "ops@example.com, dev@example.com"
    assert message["Message-ID"] == "<abc@marmot>"
    assert message["Date"]
    assert message.get_content_type() == "text/plain"
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.decode().replace("\r\n", "\n") == "The flow run failed.\nSee the logs.\n"
    assert delivery.status == "mailed 2 recipient(s)"


async def test_email_logs_in_when_a_username_is_set() -> None:
    for server in mailing(login=("marmot", "pw-123")):
        await send_email(mailer(server, username="marmot", password="pw-123"), "s", "b")

        assert server.logins == ["marmot"]
        assert len(server.messages) == 1


async def test_a_rejected_login_fails_without_showing_the_password() -> None:
    for server in mailing(login=("marmot", "right-password")):
        with pytest.raises(ActionFailed) as caught:
            await send_email(mailer(server, username="marmot", password="wrong-password"), "s", "b")

        assert not isinstance(caught.value, TransientFailure)
        assert "535" in str(caught.value)
        assert "wrong-password" not in str(caught.value)
        assert server.messages == []


async def test_smtp_5xx_recipient_refusal_fails(mail: MailServer) -> None:
    mail.mailbox.rcpt_reply = "550 5.1.1 mailbox unavailable"

    with pytest.raises(ActionFailed) as caught:
        await send_email(mailer(mail), "s", "b")

    assert not isinstance(caught.value, TransientFailure)
    assert "550" in str(caught.value) and "ops@example.com" in str(caught.value)


async def test_smtp_4xx_recipient_refusal_is_transient(mail: MailServer) -> None:
    mail.mailbox.rcpt_reply = "450 4.2.1 try again later"

    with pytest.raises(TransientFailure, match="450"):
        await send_email(mailer(mail), "s", "b")


async def test_smtp_5xx_reply_to_the_message_fails(mail: MailServer) -> None:
    mail.mailbox.data_reply = "554 5.6.0 message refused"

    with pytest.raises(ActionFailed) as caught:
        await send_email(mailer(mail), "s", "b")

    assert not isinstance(caught.value, TransientFailure)
    assert "554 5.6.0 message refused" in str(caught.value)


async def test_smtp_4xx_reply_to_the_message_is_transient(mail: MailServer) -> None:
    mail.mailbox.data_reply = "451 4.3.0 local error"

    with pytest.raises(TransientFailure, match="451"):
        await send_email(mailer(mail), "s", "b")


async def test_an_unreachable_smtp_server_is_transient() -> None:
    down = block(
        "email",
        "down",
        smtp_server="127.0.0.1",
        smtp_port=free_port(),
        smtp_type="none",
        email_from="m@example.com",
        email_to=["a@example.com"],
        password="never-shown",
    )

    with pytest.raises(TransientFailure, match="could not reach the SMTP server") as caught:
        await send_email(down, "s", "b", timeout_s=2.0)
    assert "never-shown" not in str(caught.value)


async def test_starttls_to_a_server_without_it_fails(mail: MailServer) -> None:
    with pytest.raises(ActionFailed, match="STARTTLS"):
        await send_email(mailer(mail, smtp_type="STARTTLS"), "s", "b")
    assert mail.messages == []


@pytest.mark.parametrize("kind", ["starttls", "ssl"])
async def test_email_over_tls_is_delivered(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("cryptography")
    context = self_signed_context(tmp_path)
    for server in mailing(tls=kind, context=context):
        smtp_type = "STARTTLS" if kind == "starttls" else "SSL"
        await send_email(mailer(server, smtp_type=smtp_type, verify=False), "tls", "b")

        [(_, message)] = server.messages
        assert message["Subject"] == "tls"


async def test_an_unverifiable_certificate_fails_at_once(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    context = self_signed_context(tmp_path)
    for server in mailing(tls="ssl", context=context):
        with pytest.raises(ActionFailed, match="TLS") as caught:
            await send_email(mailer(server, smtp_type="SSL"), "s", "b", timeout_s=5.0)

        assert not isinstance(caught.value, TransientFailure)
        assert server.messages == []


async def test_email_sending_does_not_block_the_event_loop(mail: MailServer) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        await send_email(mailer(mail), "s", "b")
    finally:
        ticker.cancel()
    assert ticks > 1
