"""The HTTP server's limits over real sockets on 127.0.0.1: slow and idle clients are
timed out, connections are capped below the descriptor limit, and every connection
closed or refused is counted in ``marmot_http_refused{reason}``."""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from marmot.actors.metrics import Metrics
from marmot.actors.store import Store
from marmot.config import HttpConfig
from marmot.engine.models.events import Event, EventLimits
from marmot.engine.models.webhooks import WebhookSpec
from marmot.transport.http import ConnectionGuard, build_app, connection_limit, server_config
from marmot.transport.webhooks import WebhookReceiver, WebhookSettings

STATIC = '{"event": "cron.done", "resource": {"prefect.resource.id": "cron.nightly"}}'
HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # not the main thread: no signal handlers


class Served:
    """``server_config``'s server for an app, on a free port in a thread."""

    def __init__(self, http: HttpConfig, app: Any = None, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        app = app or build_app(self.metrics.registry, lambda: {"ok": True})
        config = server_config(app, http, self.metrics)
        self.guard: ConnectionGuard = cast(Any, config.http).guard
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.server = _Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self.clients: list[socket.socket] = []

    def __enter__(self) -> Served:
        self.thread.start()
        _until(lambda: self.server.started)
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def connect(self, sent: bytes = b"") -> socket.socket:
        """A raw connection that sends ``sent`` and then nothing."""
        client = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.clients.append(client)
        if sent:
            client.sendall(sent)
        return client

    def refused(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "marmot_http_refused_total", {"reason": reason}
        )
        return value or 0.0


def _until(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def _read_to_close(client: socket.socket, timeout_s: float = 30.0) -> bytes:
    """What the server sends until it closes the connection (raises on a time-out)."""
    client.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(ConnectionResetError):  # closed with our bytes unread
        while chunk := client.recv(65536):
            data += chunk
    return data


def test_a_half_sent_request_is_closed_after_the_header_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="marmot.transport.http"),
        Served(HttpConfig(header_timeout_s=0.3)) as served,
    ):
        for _ in range(3):
            served.connect(HALF_SENT)
        served.connect()  # connects and never sends a byte
        # Closed by the server (without a time-out here, they would stay open).
        for client in served.clients:
            assert _read_to_close(client) == b""
        _until(lambda: served.guard.open == 0)
        assert served.refused("header_timeout") == 4
        assert httpx.get(served.url("/healthz")).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "marmot.transport.http"]
    # Counted every time, logged once per interval (with the peer's address).
    assert len(lines) == 1
    assert lines[0].startswith("HTTP connection from 127.0.0.1:")
    assert "no complete request headers within 0.3 s" in lines[0]


def test_an_idle_keep_alive_connection_is_closed_without_counting_a_refusal() -> None:
    with Served(HttpConfig(header_timeout_s=0.3)) as served:
        client = served.connect(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = _read_to_close(client)
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert served.refused("header_timeout") == 0
        # A keep-alive connection that starts a request and stalls is timed out.
        client = served.connect(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + HALF_SENT)
        assert _read_to_close(client).startswith(b"HTTP/1.1 200 ")
        assert served.refused("header_timeout") == 1


@pytest.mark.parametrize("sent", [b"", HALF_SENT], ids=["idle", "half-sent"])
def test_at_the_cap_the_longest_waiting_connection_makes_room(sent: bytes) -> None:
    with Served(HttpConfig(max_connections=20, header_timeout_s=60)) as served:
        waiting = [served.connect(sent) for _ in range(50)]
        _until(lambda: served.refused("evicted") == 30)
        # The oldest were closed; the newest still wait.
        assert all(_read_to_close(client) == b"" for client in waiting[:30])
        assert served.guard.open <= 20
        for _ in range(5):
            assert httpx.get(served.url("/healthz")).status_code == 200
        assert served.refused("too_many_connections") == 0


async def _stalling_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body before it answers (the body never comes whole)."""
    assert scope["type"] == "http"
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_when_every_connection_is_busy_a_new_one_gets_503() -> None:
    stalled = b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nabc"
    with Served(HttpConfig(max_connections=2), app=_stalling_app) as served:
        served.connect(stalled)
        served.connect(stalled)
        _until(lambda: served.guard.open == 2 and served.guard.waiting == 0)
        reply = _read_to_close(served.connect())
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"retry-after: 1" in reply
        assert served.refused("too_many_connections") == 1
        assert served.guard.open == 2


def test_unfinished_headers_over_the_limit_get_400_and_are_counted() -> None:
    """A half-sent request may not grow its headers without bound meanwhile."""
    with Served(HttpConfig(header_timeout_s=60)) as served:
        reply = _read_to_close(served.connect(HALF_SENT + b"a" * 20_000), timeout_s=5)
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert served.refused("bad_request") == 1


def test_the_connection_cap_stays_below_half_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_limit(5) == 5
    assert connection_limit(10**9) == soft // 2


def test_a_slow_webhook_body_gets_408_and_its_connection_is_closed(tmp_path: Path) -> None:
    metrics = Metrics()
    emitted: list[Event] = []

    async def emit(events: Any) -> None:
        emitted.extend(events)

    with Store.open(tmp_path / "marmot.db") as store:
        webhook = store.webhooks.create(WebhookSpec(name="cron", template=STATIC))
        settings = WebhookSettings(
            limits=EventLimits(),
            max_body_bytes=10_000,
            template_max_bytes=65_536,
            template_timeout_s=2.0,
            body_timeout_s=0.5,
        )
        receiver = WebhookReceiver(
            store.webhooks, settings, metrics, emit=emit, is_ready=lambda: True
        )
        app = build_app(metrics.registry, lambda: {"ok": True}, receiver)
        with Served(HttpConfig(header_timeout_s=30), app=app, metrics=metrics) as served:
            started = time.monotonic()
            client = served.connect(
                f"POST /hooks/{webhook.slug} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Length: 100\r\n\r\n0123456789".encode()
            )
            reply = _read_to_close(client)
            assert time.monotonic() - started > 0.4
            assert reply.startswith(b"HTTP/1.1 408 ")
            assert b"connection: close" in reply.lower()
            assert reply.endswith(b"the request body did not arrive within 0.5 s")
            assert served.refused("body_timeout") == 1
    sample = metrics.registry.get_sample_value(
        "marmot_webhook_requests_total", {"webhook": "cron", "outcome": "timeout"}
    )
    assert sample == 1
    assert [e.event for e in emitted] == ["marmot.webhook.failed"]


_FD_LIMITED_SERVER = """
import resource, socket, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
import uvicorn
from marmot.actors.metrics import Metrics
from marmot.config import HttpConfig
from marmot.transport.http import build_app, server_config
metrics = Metrics()
app = build_app(metrics.registry, lambda: {"ok": True})
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(server_config(app, HttpConfig(header_timeout_s=60), metrics)).run(sockets=[sock])
"""


@pytest.mark.parametrize("sent", [b"", HALF_SENT], ids=["idle", "half-sent"])
def test_more_idle_connections_than_descriptors_do_not_take_healthz_down(
    tmp_path: Path, sent: bytes
) -> None:
    """A server allowed 256 descriptors: 600 idle (or half-sent) connections, more
    than it could hold, and /healthz still answers between them."""
    script = tmp_path / "server.py"
    script.write_text(_FD_LIMITED_SERVER)
    server = subprocess.Popen(
        [sys.executable, str(script), "256"], stdout=subprocess.PIPE, text=True
    )
    clients: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            _until(lambda: _answers(http), 60)
            for batch in range(12):
                for _ in range(50):
                    client = socket.create_connection(("127.0.0.1", port), timeout=10)
                    clients.append(client)
                    if sent:
                        client.sendall(sent)
                reply = http.get("/healthz", headers={"connection": "close"})
                assert reply.status_code == 200, f"after {(batch + 1) * 50} connections"
            refused = http.get("/metrics", headers={"connection": "close"}).text
        assert 'marmot_http_refused_total{reason="evicted"}' in refused
    finally:
        for client in clients:
            client.close()
        server.terminate()
        server.wait(10)


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False
