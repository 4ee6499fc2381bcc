"""Delivering notifications and webhook calls through blocks, one attempt each.

Slack and Microsoft Teams get their incoming-webhook JSON, a ``webhook`` block
gets the payload as written, and email goes over SMTP (stdlib ``smtplib`` in a
worker thread). Failures that may pass (connect errors, time-outs, HTTP 5xx,
408 and 429, SMTP 4xx) raise ``TransientFailure``; the rest raise
``ActionFailed`` with the status and a short excerpt of the reply. No message
ever carries a block's secrets (webhook URLs, headers, passwords).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import smtplib
import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from marmot.actors.action_runs import ActionFailed, TransientFailure
from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.clock import Clock
from marmot.engine.models.blocks import (
    BlockDocument,
    EmailNotification,
    MicrosoftTeamsWebhook,
    SlackWebhook,
    Webhook,
)

__all__ = [
    "Delivery",
    "block_secrets",
    "call_webhook",
    "check_public_url",
    "email_message",
    "excerpt",
    "judge_response",
    "retry_after_s",
    "send_email",
    "send_notification",
    "slack_message",
    "teams_message",
    "webhook_body",
]

EXCERPT_CHARS = 200
"""How much of a failed reply an error message quotes."""

RESPONSE_BODY_CHARS = 1_000
"""How much of a webhook's reply a result keeps (Prefect keeps 1,000 characters)."""

# Slack's Block Kit limits: a header's text, a section's text, blocks per message.
_SLACK_HEADER_CHARS = 150
_SLACK_SECTION_CHARS = 3_000
_SLACK_MAX_BLOCKS = 50
_SLACK_FALLBACK_CHARS = 3_000


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one successful attempt got back."""

    status: str
    status_code: int | None = None
    response_body: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)


# -- message formats -------------------------------------------------------------------


def slack_message(subject: str, body: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: the subject as a ``header`` block, the
    body as ``mrkdwn`` sections, and ``text`` as the notification fallback.

    Slack's limits are kept: a header is clipped to 150 characters, the body is
    cut into sections of at most 3,000 and a message has at most 50 blocks.
    """
    title = _one_line(subject)
    blocks: list[dict[str, Any]] = []
    if title:
        blocks.append(
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": _clip(title, _SLACK_HEADER_CHARS),
                    "emoji": True,
                },
            }
        )
    room = _SLACK_MAX_BLOCKS - len(blocks)
    chunks = list(_chunks(body, _SLACK_SECTION_CHARS))
    if len(chunks) > room:
        chunks = [*chunks[: room - 1], _clip(chunks[room - 1], _SLACK_SECTION_CHARS - 1) + "…"]
    blocks.extend({"type": "section", "text": {"type": "mrkdwn", "text": c}} for c in chunks)
    fallback = "\n".join(part for part in (title, body.strip()) if part)
    return {"text": _clip(fallback, _SLACK_FALLBACK_CHARS) or " ", "blocks": blocks}


def teams_message(subject: str, body: str, *, wrap: bool = True) -> dict[str, Any]:
    """A Teams message carrying one Adaptive Card: the subject as a bold heading,
    then the body.

    Teams Workflows ("post to a channel when a webhook request is received")
    accept only Adaptive Cards, in this ``message``/``attachments`` envelope;
    the retired Office 365 connectors accepted the same envelope.
    """
    card_body: list[dict[str, Any]] = []
    title = _one_line(subject)
    if title:
        card_body.append(
            {
                "type": "TextBlock",
                "text": title,
                "weight": "Bolder",
                "size": "Medium",
                "style": "heading",
                "wrap": wrap,
            }
        )
    if body.strip():
        card_body.append({"type": "TextBlock", "text": body, "wrap": wrap})
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": card_body,
                    "msteams": {"width": "Full"},
                },
            }
        ],
    }


def webhook_body(payload: str) -> tuple[bytes, str | None]:
    """The request body for a webhook payload and its content type.

    The body is the payload exactly as rendered (Prefect sends the rendered
    string as the raw body). A payload that parses as a JSON object or array
    is labelled ``application/json``, any other text ``text/plain``; an empty
    payload sends no body.
    """
    if not payload:
        return b"", None
    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if isinstance(value, dict | list):
        return payload.encode(), "application/json"
    return payload.encode(), "text/plain; charset=utf-8"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chunks(text: str, size: int) -> Iterator[str]:
    text = text.strip()
    while text:
        cut = len(text) if len(text) <= size else text.rfind("\n", 0, size)
        if cut <= 0:
            cut = size
        yield text[:cut]
        text = text[cut:].lstrip("\n")


# -- HTTP delivery -----------------------------------------------------------------


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta seconds or an HTTP
    date, measured from ``now``), or None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _secrets_of(block: BlockDocument) -> list[str]:
    """A block's secret strings, and for a secret URL also its path and query (a
    server that echoes the request path must not leak a webhook's token)."""
    found: set[str] = set()
    for value in block.data.secret_values():
        found.add(value)
        parts = urlsplit(value)
        if parts.scheme and parts.netloc:
            tail = parts.path + (f"?{parts.query}" if parts.query else "")
            found.update(p for p in (tail, parts.path, parts.query) if len(p) >= 6)
    # Longest first, so a whole URL is masked before the path inside it.
    return sorted(found, key=len, reverse=True)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def _excerpt(text: str, secrets: Iterable[str], limit: int = EXCERPT_CHARS) -> str:
    return _clip(_one_line(_scrub(text, secrets)), limit)


def block_secrets(block: BlockDocument) -> list[str]:
    """A block's secret strings (and the secret parts of secret URLs), longest
    first: what :func:`excerpt` scrubs from text a service sent back."""
    return _secrets_of(block)


def excerpt(text: str, secrets: Iterable[str], limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, each secret replaced by ``********``, clipped to ``limit``."""
    return _excerpt(text, secrets, limit)


def judge_response(
    response: httpx.Response, what: str, secrets: list[str], now: datetime
) -> Delivery:
    """The delivery for a 2xx reply; raises ``TransientFailure`` for 408, 429 and
    5xx (with ``Retry-After``), ``ActionFailed`` for any other status."""
    return _judge(response, what, secrets, now)


async def check_public_url(url: str, what: str) -> None:
    """Raise ``ActionFailed`` when ``url``'s host resolves to a non-global address
    (``allow_private_urls: false``), ``TransientFailure`` when it does not resolve."""
    await _check_public(url, what)


def _judge(response: httpx.Response, what: str, secrets: list[str], now: datetime) -> Delivery:
    """A delivery for a 2xx reply; raises for anything else."""
    code = response.status_code
    if 200 <= code < 300:
        return Delivery(
            f"HTTP {code}",
            status_code=code,
            response_body=_scrub(response.text, secrets)[:RESPONSE_BODY_CHARS],
        )
    excerpt = _excerpt(response.text, secrets)
    reason = f"{what} answered HTTP {code}" + (f": {excerpt}" if excerpt else "")
    if code in (408, 429) or code >= 500:
        wait = retry_after_s(response.headers.get("retry-after"), now)
        raise TransientFailure(reason, retry_after_s=wait)
    if 300 <= code < 400:
        raise ActionFailed(f"{reason} (redirects are not followed)")
    raise ActionFailed(reason)


async def _check_public(url: str, what: str) -> None:
    # ``allow_private_urls: false``: refuse hosts that resolve to loopback,
    # private, link-local or other non-global addresses. The check resolves
    # before the request connects, so a DNS answer that changes in between
    # is not caught; it guards against mistakes, not a hostile resolver.
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ActionFailed(f"{what} has a URL without a host")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443)
        except OSError as exc:
            raise TransientFailure(f"{what}: could not resolve its host ({exc})") from None
        # An IPv6 link-local answer may carry a zone ("fe80::1%eth0").
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if any(not a.is_global for a in addresses):
        raise ActionFailed(f"{what} points at a private address and allow_private_urls is false")


async def _request(
    http: httpx.AsyncClient,
    block: BlockDocument,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    content: bytes,
    allow_private_urls: bool,
    verify: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> Delivery:
    what = block.describe()
    secrets = _secrets_of(block)
    if not allow_private_urls:
        await _check_public(url, what)
    try:
        if verify:
            response = await http.request(method, url, headers=headers, content=content)
        else:
            async with httpx.AsyncClient(
                verify=False, timeout=http.timeout, follow_redirects=False
            ) as insecure:
                response = await insecure.request(method, url, headers=headers, content=content)
    except httpx.TimeoutException:
        raise TransientFailure(f"{what} did not answer in time") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
        kind = type(exc).__name__
        raise ActionFailed(f"{what} has a URL that cannot be called ({kind})") from None
    except httpx.TransportError as exc:
        raise TransientFailure(
            f"{what} could not be reached: {_excerpt(str(exc), secrets) or type(exc).__name__}"
        ) from None
    return _judge(response, what, secrets, clock.now())


IDEMPOTENCY_HEADER = "Idempotency-Key"


def _with_key(headers: dict[str, str], idempotency_key: str | None) -> dict[str, str]:
    # The action's key (firing id : action index): an action carried out again
    # after a crash sends the same one, so the receiver can tell.
    if idempotency_key and not any(k.lower() == "idempotency-key" for k in headers):
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    return headers


async def call_webhook(
    http: httpx.AsyncClient,
    block: BlockDocument,
    payload: str,
    *,
    idempotency_key: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Delivery:
    """Call a ``webhook`` block with a rendered payload (see ``webhook_body``);
    returns the delivery, with the reply's status and body. ``idempotency_key``
    goes in an ``Idempotency-Key`` header (unless the block sets one)."""
    data = block.data
    if not isinstance(data, Webhook):
        raise ActionFailed(f"{block.describe()} is not a webhook block")
    content, content_type = webhook_body(payload)
    headers = _with_key(dict(data.headers.get_secret_value()), idempotency_key)
    if content_type and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    return await _request(
        http,
        block,
        method=data.method,
        url=data.url.get_secret_value(),
        headers=headers,
        content=content,
        allow_private_urls=data.allow_private_urls,
        verify=data.verify,
        clock=clock,
    )


async def send_notification(
    http: httpx.AsyncClient,
    block: BlockDocument,
    subject: str,
    body: str,
    *,
    smtp_timeout_s: float = 30.0,
    message_id: str | None = None,
    idempotency_key: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Delivery:
    """Send a subject and body through a notification block, by its type.

    A ``webhook`` block receives ``{"subject": ..., "body": ...}`` as JSON with
    its own method and headers (Marmot's extension: Prefect's webhook block
    cannot notify). ``message_id`` becomes an email's Message-ID;
    ``idempotency_key`` an ``Idempotency-Key`` header of an HTTP request.
    """
    data = block.data
    if isinstance(data, SlackWebhook):
        message: Any = slack_message(subject, body)
        url, allow_private = data.url.get_secret_value(), data.allow_private_urls
        headers = {"Content-Type": "application/json"}
        method, verify = "POST", True
    elif isinstance(data, MicrosoftTeamsWebhook):
        message = teams_message(subject, body, wrap=data.wrap)
        url, allow_private = data.url.get_secret_value(), data.allow_private_urls
        headers = {"Content-Type": "application/json"}
        method, verify = "POST", True
    elif isinstance(data, Webhook):
        message = {"subject": subject, "body": body}
        url, allow_private = data.url.get_secret_value(), data.allow_private_urls
        headers = {"Content-Type": "application/json", **data.headers.get_secret_value()}
        method, verify = data.method, data.verify
    elif isinstance(data, EmailNotification):
        return await send_email(
            block, subject, body, timeout_s=smtp_timeout_s, message_id=message_id
        )
    else:
        # custom-webhook and the Apprise-sent types have their own senders
        # (transport/custom_webhook.py, transport/apprise_notify.py).
        raise ActionFailed(f"{block.describe()} is not sent by this function")
    return await _request(
        http,
        block,
        method=method,
        url=url,
        headers=_with_key(headers, idempotency_key),
        content=json.dumps(message).encode(),
        allow_private_urls=allow_private,
        verify=verify,
        clock=clock,
    )


# -- email -------------------------------------------------------------------------


def email_message(
    data: EmailNotification, subject: str, body: str, *, message_id: str | None = None
) -> EmailMessage:
    """The MIME message for an email block: plain UTF-8 text, with Subject
    (on one line), From, To, Date and, if given, Message-ID."""
    message = EmailMessage()
    message["Subject"] = _one_line(subject)
    message["From"] = data.sender
    message["To"] = ", ".join(data.email_to)
    message["Date"] = formatdate(usegmt=True)
    if message_id:
        message["Message-ID"] = message_id
    message.set_content(body)
    return message


async def send_email(
    block: BlockDocument,
    subject: str,
    body: str,
    *,
    timeout_s: float = 30.0,
    message_id: str | None = None,
) -> Delivery:
    """Mail a subject and body through an ``email`` block's SMTP server.

    ``smtplib`` runs in a worker thread; ``timeout_s`` bounds each socket
    operation (a cancelled caller does not stop the thread before that).
    """
    data = block.data
    if not isinstance(data, EmailNotification):
        raise ActionFailed(f"{block.describe()} is not an email block")
    message = email_message(data, subject, body, message_id=message_id)
    what = block.describe()
    secrets = _secrets_of(block)
    try:
        refused = await asyncio.to_thread(_smtp_send, data, message, timeout_s)
    except smtplib.SMTPRecipientsRefused as exc:
        raise _refused(what, exc.recipients, secrets) from None
    except smtplib.SMTPResponseException as exc:
        reply = _smtp_reply(exc.smtp_code, exc.smtp_error, secrets)
        if 400 <= exc.smtp_code < 500 or isinstance(exc, smtplib.SMTPConnectError):
            raise TransientFailure(f"{what}: the SMTP server answered {reply}") from None
        raise ActionFailed(f"{what}: the SMTP server answered {reply}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise ActionFailed(f"{what}: {_excerpt(str(exc), secrets)}") from None
    except smtplib.SMTPServerDisconnected:
        raise TransientFailure(f"{what}: the SMTP server closed the connection") from None
    except smtplib.SMTPException as exc:
        raise ActionFailed(f"{what}: {_excerpt(str(exc), secrets)}") from None
    except ssl.SSLError as exc:
        # A certificate or TLS mismatch does not fix itself on a retry.
        raise ActionFailed(f"{what}: TLS with the SMTP server failed ({exc.reason})") from None
    except TimeoutError:
        raise TransientFailure(f"{what}: the SMTP server did not answer in time") from None
    except OSError as exc:
        raise TransientFailure(
            f"{what}: could not reach the SMTP server ({exc.strerror or type(exc).__name__})"
        ) from None
    if refused:
        # Some recipients got it: a retry would mail them twice, so give up.
        raise _refused(what, refused, secrets, delivered=len(data.email_to) - len(refused))
    return Delivery(
        f"mailed {len(data.email_to)} recipient(s)", extra={"recipients": list(data.email_to)}
    )


def _smtp_send(
    data: EmailNotification, message: EmailMessage, timeout_s: float
) -> dict[str, tuple[int, bytes]]:
    context = ssl.create_default_context()
    if not data.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    smtp: smtplib.SMTP
    if data.smtp_type == "SSL":
        smtp = smtplib.SMTP_SSL(data.smtp_server, data.port, timeout=timeout_s, context=context)
    else:
        smtp = smtplib.SMTP(data.smtp_server, data.port, timeout=timeout_s)
    with smtp:
        if data.smtp_type == "STARTTLS":
            smtp.starttls(context=context)
        if data.username:
            password = data.password.get_secret_value() if data.password else ""
            smtp.login(data.username, password)
        refused: dict[str, tuple[int, bytes]] = smtp.send_message(
            message, from_addr=data.sender, to_addrs=list(data.email_to)
        )
    return refused


def _smtp_reply(code: int, text: bytes | str, secrets: Iterable[str]) -> str:
    decoded = text.decode(errors="replace") if isinstance(text, bytes) else text
    return f"{code} {_excerpt(decoded, secrets)}".strip()


def _refused(
    what: str,
    recipients: Mapping[str, tuple[int, bytes]],
    secrets: Iterable[str],
    *,
    delivered: int = 0,
) -> ActionFailed:
    listed = "; ".join(
        f"{address} ({_smtp_reply(code, text, secrets)})"
        for address, (code, text) in recipients.items()
    )
    reason = f"{what}: the SMTP server refused {listed}"
    if delivered:
        return ActionFailed(f"{reason}; delivered to {delivered} other recipient(s)")
    if all(400 <= code < 500 for code, _ in recipients.values()):
        return TransientFailure(reason)
    return ActionFailed(reason)
