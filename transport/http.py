"""The daemon's HTTP face: incoming webhooks, ``/healthz`` and Prometheus ``/metrics``.

``server_config`` builds the uvicorn server for the app: its h11 protocol is
guarded so that slow or idle clients cannot hold the daemon's descriptors
(a request's headers must arrive within ``http.header_timeout_s``; at most
``http.max_connections`` connections are open, fewer under a low descriptor
limit). Every connection it closes or refuses is counted in
``marmot_http_refused{reason}`` and logged at a limited rate.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import h11
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.metrics import Metrics
from marmot.actors.throttle import LogThrottle
from marmot.config import HttpConfig
from marmot.engine.clock import Clock
from marmot.transport.webhooks import HOOKS_PATH, METHODS, WebhookReceiver

__all__ = ["ConnectionGuard", "build_app", "connection_limit", "server_config"]

log = logging.getLogger(__name__)

# An idle keep-alive connection is closed this many seconds after its response.
_KEEP_ALIVE_S = 5
# Largest request line plus headers (h11's default; nginx refuses a header
# line over 8 KiB); a larger one gets 400.
_MAX_HEADER_BYTES = 16 * 1024
_LOG_INTERVAL_S = 5.0
_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
    b"content-length: 21\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n"
)
_REASONS = {
    "header_timeout": "sent no complete request headers within {timeout} s",
    "evicted": "closed to make room: {limit} connections open (http.max_connections)",
    "too_many_connections": "refused: {limit} connections open, all busy (http.max_connections)",
    "bad_request": "sent a malformed request, or headers over {header_bytes} bytes (400)",
}


def build_app(
    registry: CollectorRegistry,
    health: Callable[[], dict[str, Any]],
    webhooks: WebhookReceiver | None = None,
    console: Sequence[BaseRoute] = (),
) -> Starlette:
    """The Starlette app serving health and metrics, ``/hooks/<slug>`` when given
    a webhook receiver, and the web console's routes when given (``/``, ``/ui/``)."""

    async def healthz(request: Request) -> Response:
        body = health()
        return JSONResponse(body, status_code=200 if body.get("ok") else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [Route("/healthz", healthz), Route("/metrics", metrics)]
    if webhooks is not None:
        routes.append(Route(HOOKS_PATH, webhooks.handle, methods=list(METHODS)))
    routes.extend(console)
    return Starlette(routes=routes)


def connection_limit(max_connections: int) -> int:
    """``max_connections``, capped at half the process's soft descriptor limit
    (RLIMIT_NOFILE): the other half stays for ZeroMQ, Ray, SQLite and backups."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft // 2))


def server_config(app: ASGIApp, http: HttpConfig, metrics: Metrics) -> uvicorn.Config:
    """The uvicorn settings for serving ``app`` under ``http``'s limits (the caller
    binds the socket): header time-out, connection cap, keep-alive, header size."""
    limit = connection_limit(http.max_connections)
    if limit < http.max_connections:
        log.warning(
            "http.max_connections = %d is over half the descriptor limit: capped at %d",
            http.max_connections,
            limit,
            extra={"max_connections": limit},
        )
    guard = ConnectionGuard(limit, http.header_timeout_s, metrics)
    config = uvicorn.Config(
        app,
        http=_guarded_protocol(guard),
        ws="none",
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=_KEEP_ALIVE_S,
        h11_max_incomplete_event_size=_MAX_HEADER_BYTES,
    )
    # The guard reports bad requests at a limited rate; uvicorn would log each.
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _BadRequestLines) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_BadRequestLines())
    return config


class _BadRequestLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Invalid HTTP request received."


class ConnectionGuard:
    """One server's connections: how many are open, and which are waiting for a
    request (connected, or done with a response, and no request headers yet),
    oldest first. Reports every connection it closes or refuses."""

    def __init__(
        self,
        max_connections: int,
        header_timeout_s: float,
        metrics: Metrics,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self._refused = metrics.http_refused
        self._waiting: dict[_GuardedH11Protocol, None] = {}
        self._throttle = LogThrottle(_LOG_INTERVAL_S, clock)

    def admit(self, connection: _GuardedH11Protocol) -> bool:
        """Count a new connection; False if it must be refused. At the cap, the
        connection that has waited longest for a request is closed to make room:
        idle and half-sent connections cannot lock out a request that comes whole."""
        if self.open >= self.max_connections:
            oldest = next(iter(self._waiting), None)
            if oldest is None:
                self.report("too_many_connections", connection.client)
                return False
            self.report("evicted", oldest.client)
            oldest.close_waiting()
        self.open += 1
        return True

    def release(self) -> None:
        """An admitted connection is gone."""
        self.open -= 1

    def wait(self, connection: _GuardedH11Protocol) -> None:
        """``connection`` waits for a request's headers (it goes last in line)."""
        self._waiting.pop(connection, None)
        self._waiting[connection] = None

    def serve(self, connection: _GuardedH11Protocol) -> None:
        """``connection`` is no longer waiting (a request came, or it is closing)."""
        self._waiting.pop(connection, None)

    @property
    def waiting(self) -> int:
        """Connections waiting for a request."""
        return len(self._waiting)

    def report(self, reason: str, client: tuple[str, int] | None) -> None:
        """Count a closed or refused connection and log it at a limited rate."""
        self._refused.labels(reason).inc()
        skipped = self._throttle.admit(reason)
        if skipped is None:
            return
        peer = f"{client[0]}:{client[1]}" if client else "unknown"
        what = _REASONS[reason].format(
            timeout=self.header_timeout_s,
            limit=self.max_connections,
            header_bytes=_MAX_HEADER_BYTES,
        )
        more = f" ({skipped} more since the last report)" if skipped else ""
        log.warning(
            "HTTP connection from %s %s%s", peer, what, more, extra={"reason": reason, "peer": peer}
        )


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a ``ConnectionGuard``: a connection waiting for
    a request is closed after the guard's header time-out.

    Waiting means h11's server side is IDLE (no request yet) or DONE (response
    sent, the rest of the request still coming in); SEND_RESPONSE means a
    request is being served, which the app bounds (webhooks time their body).
    """

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._is_admitted = False
        self._has_served = False  # a response was sent on this connection
        self._has_bytes = False  # bytes came since it began to wait

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            transport.write(_TOO_MANY)
            transport.close()  # stops reading: no request of its own reaches the app
            return
        self._is_admitted = True
        self._wait_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._is_admitted:
            self._is_admitted = False
            self.guard.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._has_bytes = True
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.our_state is h11.SEND_RESPONSE:
            self._stop_waiting()

    def on_response_complete(self) -> None:
        self._has_served = True
        super().on_response_complete()
        # Not when a pipelined request is already being served.
        if not self.transport.is_closing() and self.conn.our_state in (h11.IDLE, h11.DONE):
            self._wait_for_request()

    def send_400_response(self, msg: str) -> None:
        self._stop_waiting()
        self.guard.report("bad_request", self.client)
        super().send_400_response(msg)

    def close_waiting(self) -> None:
        """Close this connection, which waits for a request."""
        self._stop_waiting()
        self.transport.close()

    def _wait_for_request(self) -> None:
        self._stop_waiting()
        self._has_bytes = False
        self._deadline = self.loop.call_later(self.guard.header_timeout_s, self._timed_out)
        self.guard.wait(self)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.guard.serve(self)

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        # An idle keep-alive connection is closed, not refused: that is normal.
        if self._has_bytes or self.conn.trailing_data[0] or not self._has_served:
            self.guard.report("header_timeout", self.client)
        self.close_waiting()


def _guarded_protocol(guard: ConnectionGuard) -> type[H11Protocol]:
    """The protocol class of one server (uvicorn builds it with fixed arguments)."""

    class Guarded(_GuardedH11Protocol):
        pass

    Guarded.guard = guard
    return Guarded
