"""Incoming webhooks over HTTP: a request to ``/hooks/<slug>`` becomes an event.

As in Prefect Cloud, a webhook answers quietly: ``204 No Content`` once its
event is in the durable event log, ``400`` with a short reason when its
template fails or does not make an event (reported in the stream too, as a
``marmot.webhook.failed`` event), and ``404`` for a URL that is unknown or
whose webhook is disabled, without saying which. Marmot adds ``413`` for a
body over ``http.max_body_bytes``, ``408`` (closing the connection) for a body
that takes longer than ``http.body_timeout_s`` to arrive, and ``503`` while
the daemon starts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.metrics import Metrics
from marmot.actors.store.webhooks import StoredWebhook, Webhooks
from marmot.actors.throttle import LogThrottle
from marmot.config import HttpConfig
from marmot.engine.clock import Clock
from marmot.engine.errors import MarmotError
from marmot.engine.models.events import Event, EventLimits
from marmot.engine.templates.webhooks import (
    WebhookFailed,
    WebhookLimits,
    WebhookRequest,
    render_webhook_event,
    webhook_failed_event,
)
from marmot.transport.webhook_requests import webhook_request

__all__ = ["HOOKS_PATH", "METHODS", "WebhookReceiver", "WebhookSettings", "hooks_url"]

log = logging.getLogger(__name__)

HOOKS_PATH = "/hooks/{slug}"
METHODS = ("GET", "HEAD", "DELETE", "POST", "PUT", "PATCH")
"""Prefect's: GET, HEAD and DELETE for templates that do not read the body, the rest with one."""

Emit = Callable[[Sequence[Event]], Awaitable[object]]

# Failures of one webhook are logged at most once per this many seconds, with a
# count of those left out: a misconfigured sender must not flood the log.
_LOG_INTERVAL_S = 5.0
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def hooks_url(http: HttpConfig) -> str:
    """Where webhook URLs start, up to the slug: ``<public_url>/hooks/``, else
    ``http://<host>:<port>/hooks/`` (this machine's name for a wildcard host)."""
    if http.public_url:
        return f"{http.public_url.rstrip('/')}/hooks/"
    host = socket.gethostname() if http.host in _WILDCARD_HOSTS else http.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}/hooks/"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How much a webhook request may carry: the event limits, the body's size in bytes
    and the seconds it may take to arrive, and the template's output size and render
    time (``limits.template_*``)."""

    limits: EventLimits
    max_body_bytes: int
    template_max_bytes: int
    template_timeout_s: float
    body_timeout_s: float = 30.0

    def render_limits(self) -> WebhookLimits:
        """The template's limits: its output may be as large as a body (a pass-through
        template writes the body out again) or ``template_max_bytes``, if larger."""
        return WebhookLimits(
            events=self.limits,
            max_output_bytes=max(self.template_max_bytes, self.max_body_bytes),
            timeout_s=self.template_timeout_s,
        )


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, read up to ``limit`` bytes within ``timeout_s``; raises ``_TooLarge``
    past the size and ``TimeoutError`` past the time (a sender trickling bytes
    would otherwise hold its connection and a task for as long as it likes)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout_s):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
    return b"".join(chunks)


class WebhookReceiver:
    """The ``/hooks/<slug>`` endpoint: resolves the slug from the store's in-memory map,
    renders the webhook's template and emits the event through ``emit``.

    ``is_ready`` says whether ``emit`` can take events (not while the daemon
    starts); ``clock`` stamps ``received`` and times renders and log throttling.
    """

    def __init__(
        self,
        webhooks: Webhooks,
        settings: WebhookSettings,
        metrics: Metrics,
        *,
        emit: Emit,
        is_ready: Callable[[], bool],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.webhooks = webhooks
        self.settings = settings
        self.metrics = metrics
        self._emit = emit
        self._is_ready = is_ready
        self._now = clock.now
        self._clock = clock.monotonic
        self._limits = settings.render_limits()
        self._throttle = LogThrottle(_LOG_INTERVAL_S, clock)

    def _count(self, webhook: StoredWebhook | None, outcome: str) -> None:
        self.metrics.webhook_requests.labels("" if webhook is None else webhook.name, outcome).inc()

    async def handle(self, request: Request) -> Response:
        """Answer one request to a webhook URL (never raises for bad input)."""
        webhook = self.webhooks.for_slug(request.path_params["slug"])
        if webhook is None or not webhook.is_enabled:
            self._count(webhook, "not_found" if webhook is None else "disabled")
            return PlainTextResponse("not found", status_code=404)
        if not self._is_ready():
            self._count(webhook, "unavailable")
            return PlainTextResponse(
                "the daemon is starting", status_code=503, headers={"Retry-After": "5"}
            )
        received = self._now()
        settings = self.settings
        try:
            body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        except _TooLarge:
            view = webhook_request(request.method, request.headers.items(), b"")
            reason = f"the request body is larger than {settings.max_body_bytes} bytes"
            return await self._refuse(webhook, view, reason, None, received, 413, "too_large")
        except TimeoutError:
            self.metrics.http_refused.labels("body_timeout").inc()
            view = webhook_request(request.method, request.headers.items(), b"")
            reason = f"the request body did not arrive within {settings.body_timeout_s} s"
            response = await self._refuse(webhook, view, reason, None, received, 408, "timeout")
            # The rest of the body may never come: do not wait for it on this connection.
            response.headers["connection"] = "close"
            return response
        except ClientDisconnect:
            self._count(webhook, "error")
            return Response(status_code=400)
        # Parsing a body (multipart, charsets) and rendering run in threads: a
        # template may render for up to its time limit, and the event loop
        # carries ingest and RPC meanwhile.
        view = await asyncio.to_thread(
            webhook_request, request.method, list(request.headers.items()), body
        )
        try:
            event = await asyncio.to_thread(
                render_webhook_event,
                webhook.template,
                view,
                webhook.identity,
                received=received,
                limits=self._limits,
                clock=self._clock,
            )
        except WebhookFailed as exc:
            return await self._refuse(webhook, view, exc.message, exc.rendered, received, 400)
        try:
            await self._emit([event])
        except Exception as exc:
            return self._not_taken(webhook, exc)
        self._count(webhook, "accepted")
        return Response(status_code=204)

    async def _refuse(
        self,
        webhook: StoredWebhook,
        view: WebhookRequest,
        reason: str,
        rendered: str | None,
        received: datetime,
        status: int,
        outcome: str = "failed",
    ) -> Response:
        """Report a request that made no event (a ``marmot.webhook.failed`` event, a
        counted and throttled log line) and answer it with ``status`` and the reason."""
        self._count(webhook, outcome)
        skipped = self._throttle.admit(str(webhook.id))
        if skipped is not None:
            more = f" ({skipped} more since the last report)" if skipped else ""
            log.warning(
                "webhook %r: request refused: %s%s",
                webhook.name,
                reason,
                more,
                extra={"webhook_id": str(webhook.id), "reason": outcome},
            )
        try:
            failed = webhook_failed_event(
                webhook.identity,
                view,
                reason,
                rendered=rendered,
                received=received,
                limits=self.settings.limits,
            )
            await self._emit([failed])
        except Exception:
            # The sender still gets its answer; the lost report is logged and counted.
            log.exception(
                "could not emit marmot.webhook.failed", extra={"webhook_id": str(webhook.id)}
            )
            self.metrics.events_dropped.labels("webhook_failure_report").inc()
        return PlainTextResponse(reason, status_code=status)

    def _not_taken(self, webhook: StoredWebhook, exc: Exception) -> Response:
        """The event could not be logged (the daemon stopping, or broken): 503 or 500."""
        if isinstance(exc, MarmotError):
            self._count(webhook, "unavailable")
            log.warning(
                "webhook %r: event not accepted: %s",
                webhook.name,
                exc,
                extra={"webhook_id": str(webhook.id), "reason": exc.code},
            )
            return PlainTextResponse("not accepted, try again", status_code=503)
        self._count(webhook, "error")
        log.exception("webhook %r: could not emit its event", webhook.name)
        return PlainTextResponse("internal error", status_code=500)
