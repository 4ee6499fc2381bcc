"""The executors' HTTP transport (aiohttp's pool under httpx), against real servers.

Every delivery test of tests/transport/test_notify.py runs again here with the
client the executors use (``build_runners``): the same requests, statuses,
failures and scrubbed messages as with httpx's own pool. Then what the
transport itself must keep: errors as httpx's, time-outs, bodies decoded, one
connection reused.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from marmot.actors.action_runs import ActionFailed, TransientFailure
from marmot.engine.models.blocks import BlockDocument
from marmot.transport.actions.pooled_http import PooledTransport, action_client
from marmot.transport.notify import call_webhook
from tests.transport.notify_servers import RecordingServer, free_port
from tests.transport.test_notify import *  # noqa: F403 (the delivery tests, run again)
from tests.transport.test_notify import hook

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """As build_runners makes it (transport/actions/__init__.py)."""
    async with action_client(5.0) as client:
        yield client


async def test_headers_go_once_as_given_and_the_body_with_its_length(
    web: RecordingServer, http: httpx.AsyncClient
) -> None:
    await call_webhook(
        http, hook(web, headers={"X-Trace": "t-1"}), '{"a": 1}', idempotency_key="f:0"
    )
    (request,) = web.requests
    assert request.headers["x-trace"] == "t-1"
    assert request.headers["idempotency-key"] == "f:0"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(b'{"a": 1}'))
    assert request.headers["host"] == web.url("").removeprefix("http://")
    assert request.body == b'{"a": 1}'


class KeepAliveServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 that keeps connections open, counts
    them, and answers every request with a gzipped body."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> KeepAliveServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        body = gzip.compress(b"compressed hello")
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def test_a_gzipped_reply_is_decoded_and_kept_alive_connections_are_reused(
    http: httpx.AsyncClient,
) -> None:
    async with KeepAliveServer() as server:
        response = await http.post(server.url, content=b"x")
        assert response.status_code == 200
        assert response.text == "compressed hello"
        for _ in range(5):
            await http.post(server.url, content=b"x")
        assert (server.requests, server.connections) == (6, 1)
        replies = await asyncio.gather(*(http.post(server.url, content=b"x") for _ in range(50)))
        assert all(r.text == "compressed hello" for r in replies)
        assert server.connections <= 50


async def test_a_refused_connection_is_an_httpx_connect_error_and_a_transient_failure(
    http: httpx.AsyncClient,
) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(httpx.ConnectError):
        await http.post(f"http://127.0.0.1:{port}/", content=b"x")
    block = hook_at(f"http://127.0.0.1:{port}/hook")
    with pytest.raises(TransientFailure, match="could not be reached"):
        await call_webhook(http, block, "x")


async def test_a_server_that_never_answers_times_out_as_a_read_timeout(
    web: RecordingServer,
) -> None:
    async with httpx.AsyncClient(timeout=0.3, transport=PooledTransport()) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(web.url("/hang"), content=b"x")
        with pytest.raises(TransientFailure, match="did not answer in time"):
            await call_webhook(client, hook(web, path="/hang"), "x")


async def test_a_peer_that_hangs_up_is_a_transport_error() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def close_at_once() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    thread = asyncio.get_running_loop().run_in_executor(None, close_at_once)
    try:
        async with httpx.AsyncClient(timeout=5, transport=PooledTransport()) as client:
            with pytest.raises(httpx.TransportError):
                await client.post(f"http://127.0.0.1:{port}/", content=b"x")
    finally:
        await thread
        listener.close()


async def test_an_unsupported_scheme_fails_for_good(http: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await http.post("ftp://127.0.0.1/x", content=b"x")
    with pytest.raises(ActionFailed, match="cannot be called"):
        await call_webhook(http, hook_at("ftp://127.0.0.1/x"), "x")


def hook_at(url: str, **data: Any) -> Any:
    from tests.transport.test_notify import block

    return block("webhook", "hook", url=url, allow_private_urls=True, **data)


async def test_a_cookie_one_server_sets_is_never_sent_with_a_later_call(
    http: httpx.AsyncClient, web: RecordingServer
) -> None:
    """As Prefect's blocks, each with a client of its own: a session cookie the host
    sets for one block's call does not go with another block's call to it."""
    web.reply("/first", 200, "ok", **{"Set-Cookie": "session=block-a-secret; Path=/"})

    def webhook(name: str, path: str) -> BlockDocument:
        return BlockDocument.model_validate(
            {
                "block_type_slug": "webhook",
                "name": name,
                "data": {"url": web.url(path), "allow_private_urls": True},
            }
        )

    for block in (webhook("a", "/first"), webhook("b", "/second"), webhook("a", "/first")):
        await call_webhook(http, block, "{}")

    assert [r.path for r in web.requests] == ["/first", "/second", "/first"]
    assert [r.headers.get("cookie") for r in web.requests] == [None, None, None]
