"""Sending through a ``custom-webhook`` block: its URL, query, JSON or form data,
headers and cookies with ``{{ subject }}``, ``{{ body }}``, ``{{ name }}`` and its
secrets filled in (Prefect's substitution), then one HTTP request.

Replies are judged as every other webhook's (``transport/notify.py``): 2xx is a
delivery, 408/429/5xx a transient failure, anything else a failure quoting the
reply with the block's secrets scrubbed.
"""

from __future__ import annotations

from typing import Any

import httpx

from marmot.actors.action_runs import ActionFailed, TransientFailure
from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.clock import Clock
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.models.service_blocks import CustomWebhook, fill_placeholders
from marmot.transport.notify import (
    IDEMPOTENCY_HEADER,
    Delivery,
    block_secrets,
    check_public_url,
    excerpt,
    judge_response,
)

__all__ = ["USER_AGENT", "custom_webhook_request", "send_custom_webhook"]

USER_AGENT = "Marmot Notifications"
"""The User-Agent a custom webhook request carries unless the block sets one."""


def custom_webhook_request(data: CustomWebhook, subject: str | None, body: str) -> dict[str, Any]:
    """The keyword arguments of ``httpx.AsyncClient.request`` for one notification:
    ``method``, ``url``, ``params``, ``headers``, ``cookies`` and one of ``json``,
    ``data`` (a form) or ``content`` (a raw string body), placeholders filled in."""
    values = data.placeholder_values(subject, body)
    request: dict[str, Any] = {
        "method": data.method,
        "url": str(fill_placeholders(data.url, values)),
        "params": fill_placeholders(data.params, values),
        "headers": {
            key: str(value)
            for key, value in (fill_placeholders(data.headers, values) or {}).items()
        },
        "cookies": fill_placeholders(data.cookies, values),
    }
    if data.json_data is not None:
        request["json"] = fill_placeholders(data.json_data, values)
    elif isinstance(data.form_data, str):
        # A string form is the raw body, as Prefect sends it.
        request["content"] = str(fill_placeholders(data.form_data, values) or "")
    elif data.form_data is not None:
        request["data"] = fill_placeholders(data.form_data, values)
    return request


async def send_custom_webhook(
    http: httpx.AsyncClient,
    block: BlockDocument,
    subject: str | None,
    body: str,
    *,
    idempotency_key: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Delivery:
    """Send one notification through a ``custom-webhook`` block; returns the delivery.

    The block's ``timeout`` bounds the request; ``idempotency_key`` goes in an
    ``Idempotency-Key`` header unless the block sets one. Raises
    ``TransientFailure`` for failures that may pass and ``ActionFailed`` otherwise.
    """
    data = block.data
    if not isinstance(data, CustomWebhook):
        raise ActionFailed(f"{block.describe()} is not a custom-webhook block")
    what = block.describe()
    secrets = block_secrets(block)
    request = custom_webhook_request(data, subject, body)
    headers: dict[str, str] = request["headers"]
    if not any(key.lower() == "user-agent" for key in headers):
        headers["User-Agent"] = USER_AGENT
    if idempotency_key and not any(key.lower() == "idempotency-key" for key in headers):
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    if not data.allow_private_urls:
        await check_public_url(request["url"], what)
    cookies: dict[str, Any] = request.pop("cookies") or {}
    if cookies and not any(key.lower() == "cookie" for key in headers):
        # One Cookie header on the shared client: httpx deprecates per-request cookies.
        headers["Cookie"] = "; ".join(f"{key}={value}" for key, value in cookies.items())
    try:
        response = await http.request(**request, timeout=data.timeout)
    except httpx.TimeoutException:
        raise TransientFailure(f"{what} did not answer within {data.timeout:g}s") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
        kind = type(exc).__name__
        raise ActionFailed(f"{what} has a URL that cannot be called ({kind})") from None
    except httpx.TransportError as exc:
        raise TransientFailure(
            f"{what} could not be reached: {excerpt(str(exc), secrets) or type(exc).__name__}"
        ) from None
    return judge_response(response, what, secrets, clock.now())
