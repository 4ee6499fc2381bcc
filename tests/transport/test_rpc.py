"""RPC over real ZeroMQ sockets on 127.0.0.1: results, typed errors, tokens, bad frames."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import zmq
import zmq.asyncio
from pydantic import BaseModel, ConfigDict

from marmot.engine.errors import (
    DaemonUnavailable,
    InternalError,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from marmot.transport.codec import pack_rpc, unpack_rpc
from marmot.transport.rpc import Handler, RpcServer
from marmot.transport.rpc_clients import AsyncRpcClient, RpcClient

ANY_PORT = "tcp://127.0.0.1:*"
T = TypeVar("T")


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    within: int


async def echo(params: dict[str, Any]) -> Any:
    return params


async def missing(params: dict[str, Any]) -> Any:
    raise NotFound(f"automation {params.get('id')!r} not found", details={"id": params.get("id")})


async def validate(params: dict[str, Any]) -> Any:
    return Window.model_validate(params)


async def crash(params: dict[str, Any]) -> Any:
    raise RuntimeError("the disk is on fire")


async def unencodable(params: dict[str, Any]) -> Any:
    return object()


HANDLERS: dict[str, Handler] = {
    "echo": echo,
    "automations.read": missing,
    "windows.create": validate,
    "crash": crash,
    "unencodable": unencodable,
}


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await main()

    return asyncio.run(bounded())


class ServerThread:
    """An RpcServer serving on its own event loop in a thread, for the sync client."""

    def __init__(self, handlers: dict[str, Handler], token: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = RpcServer(ANY_PORT, handlers, token=token)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self._ready.set()
        task = self.loop.create_task(self.server.serve())
        self.loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        self.loop.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self._thread.join(5)

    @property
    def endpoint(self) -> str:
        return self.server.bound_endpoint


@contextmanager
def serving(token: str | None = None) -> Iterator[ServerThread]:
    with ServerThread(HANDLERS, token=token) as thread:
        yield thread


@contextmanager
def client_of(thread: ServerThread, token: str | None = None) -> Iterator[RpcClient]:
    with RpcClient(thread.endpoint, token=token, timeout_s=5) as client:
        yield client


def unused_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------- sync client


def test_call_returns_the_result() -> None:
    when = datetime(2024, 5, 1, 12, tzinfo=UTC)
    with serving() as thread, client_of(thread) as client:
        assert client.call("echo", {"a": [1, 2], "when": when}) == {"a": [1, 2], "when": when}
        assert client.call("echo") == {}


def test_server_error_arrives_as_its_typed_subclass() -> None:
    with serving() as thread, client_of(thread) as client, pytest.raises(NotFound) as caught:
        client.call("automations.read", {"id": "abc"})
    assert caught.value.code == "not_found"
    assert caught.value.message == "automation 'abc' not found"
    assert caught.value.details == {"id": "abc"}


def test_pydantic_error_details_carry_field_paths() -> None:
    with serving() as thread, client_of(thread) as client:
        with pytest.raises(ValidationFailed) as caught:
            client.call("windows.create", {"name": 5, "extra": True})
        assert client.call("windows.create", {"name": "w", "within": 3}) == {
            "name": "w",
            "within": 3,
        }
    details = caught.value.details
    assert {(tuple(d["loc"]), d["type"]) for d in details} == {
        (("name",), "string_type"),
        (("within",), "missing"),
        (("extra",), "extra_forbidden"),
    }
    assert all(isinstance(d["msg"], str) for d in details)
    assert caught.value.message.startswith("3 validation errors: ")
    assert thread.server.stats.errors["validation_failed"] == 1


def test_unknown_method_is_not_found() -> None:
    with serving() as thread, client_of(thread) as client, pytest.raises(NotFound) as caught:
        client.call("nothing.here")
    assert caught.value.message == "unknown method 'nothing.here'"


def test_unexpected_exception_is_internal_with_its_message() -> None:
    with serving() as thread, client_of(thread) as client:
        with pytest.raises(InternalError, match="the disk is on fire"):
            client.call("crash")
        with pytest.raises(InternalError, match="could not be encoded"):
            client.call("unencodable")
        assert client.call("echo", {"still": "serving"}) == {"still": "serving"}
    assert thread.server.stats.errors["internal"] == 2


def test_token_is_required_when_configured() -> None:
    with serving(token="s3cret") as thread:
        with client_of(thread) as client, pytest.raises(Unauthorized, match="requires a token"):
            client.call("echo")
        with client_of(thread, token="wrong") as client, pytest.raises(Unauthorized) as caught:
            client.call("echo")
        assert "wrong" not in caught.value.message
        with client_of(thread, token="s3cret") as client:
            assert client.call("echo", {"x": 1}) == {"x": 1}
        assert thread.server.stats.errors["unauthorized"] == 2


def test_unknown_method_needs_the_token_first() -> None:
    with serving(token="s3cret") as thread:
        with client_of(thread) as client, pytest.raises(Unauthorized):
            client.call("nothing.here")
        with client_of(thread, token="s3cret") as client, pytest.raises(NotFound):
            client.call("nothing.here")


def test_sync_timeout_raises_daemon_unavailable_when_no_server_is_bound() -> None:
    endpoint = unused_endpoint()
    with RpcClient(endpoint, timeout_s=0.2) as client:
        with pytest.raises(DaemonUnavailable) as caught:
            client.call("echo")
        assert caught.value.message == f"no reply from {endpoint} within 0.2 s"
        with pytest.raises(DaemonUnavailable):
            client.call("echo", timeout_s=0.05)


def test_sync_late_reply_is_not_taken_for_the_next_call() -> None:
    gate = asyncio.Event()

    async def slow(params: dict[str, Any]) -> Any:
        await gate.wait()
        return "late"

    with ServerThread({**HANDLERS, "slow": slow}) as thread, client_of(thread) as client:
        with pytest.raises(DaemonUnavailable):
            client.call("slow", timeout_s=0.1)
        thread.loop.call_soon_threadsafe(gate.set)
        assert client.call("echo", {"n": 1}) == {"n": 1}
        assert client.call("echo", {"n": 2}) == {"n": 2}


def test_closed_client_refuses_calls() -> None:
    client = RpcClient(unused_endpoint())
    client.close()
    with pytest.raises(RuntimeError):
        client.call("echo")


def test_bind_error_is_raised_by_start() -> None:
    async def main() -> None:
        first = RpcServer(ANY_PORT, HANDLERS)
        await first.start()
        second = RpcServer(first.bound_endpoint, HANDLERS)
        try:
            with pytest.raises(zmq.ZMQError):
                await second.start()
        finally:
            await first.close()

    run(main)


# ---------------------------------------------------------------- async client and server


def test_async_call_and_typed_error() -> None:
    async def main() -> None:
        server = RpcServer(ANY_PORT, HANDLERS)
        await server.start()
        serve = asyncio.create_task(server.serve())
        async with AsyncRpcClient(server.bound_endpoint, timeout_s=5) as client:
            assert await client.call("echo", {"k": "v"}) == {"k": "v"}
            with pytest.raises(NotFound):
                await client.call("automations.read", {"id": "x"})
        await server.close()
        await serve  # close() ends serve() cleanly

    run(main)


def test_concurrent_async_calls_each_get_their_own_reply() -> None:
    count = 40
    arrived = 0
    everyone_in = asyncio.Event()

    async def gated(params: dict[str, Any]) -> Any:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone_in.set()
        await everyone_in.wait()
        for _ in range(params["spins"]):  # later callers answer first
            await asyncio.sleep(0)
        return params["n"]

    async def main() -> list[Any]:
        server = RpcServer(ANY_PORT, {"gated": gated})
        await server.start()
        serve = asyncio.create_task(server.serve())
        try:
            async with AsyncRpcClient(server.bound_endpoint, timeout_s=5) as client:
                calls = [client.call("gated", {"n": n, "spins": count - n}) for n in range(count)]
                return await asyncio.gather(*calls)
        finally:
            await server.close()
            await serve

    assert run(main) == list(range(count))


def test_slow_handler_does_not_block_other_requests() -> None:
    gate = asyncio.Event()

    async def slow(params: dict[str, Any]) -> Any:
        await gate.wait()
        return "slow"

    async def main() -> None:
        server = RpcServer(ANY_PORT, {**HANDLERS, "slow": slow})
        await server.start()
        serve = asyncio.create_task(server.serve())
        async with AsyncRpcClient(server.bound_endpoint, timeout_s=5) as client:
            slow_call = asyncio.create_task(client.call("slow"))
            assert await client.call("echo", {"fast": True}) == {"fast": True}
            assert not slow_call.done()
            gate.set()
            assert await slow_call == "slow"
        await server.close()
        await serve

    run(main)


def test_async_timeout_raises_daemon_unavailable_and_stale_reply_is_dropped() -> None:
    gate = asyncio.Event()

    async def slow(params: dict[str, Any]) -> Any:
        await gate.wait()
        return "late"

    async def main() -> None:
        async with AsyncRpcClient(unused_endpoint(), timeout_s=0.1) as nobody:
            with pytest.raises(DaemonUnavailable, match="no reply from"):
                await nobody.call("echo")
        server = RpcServer(ANY_PORT, {**HANDLERS, "slow": slow})
        await server.start()
        serve = asyncio.create_task(server.serve())
        async with AsyncRpcClient(server.bound_endpoint, timeout_s=5) as client:
            with pytest.raises(DaemonUnavailable):
                await client.call("slow", timeout_s=0.1)
            gate.set()
            assert await client.call("echo", {"n": 1}) == {"n": 1}
        await server.close()
        await serve

    run(main)


def test_async_client_works_again_in_a_new_event_loop() -> None:
    with ServerThread(HANDLERS) as thread:
        client = AsyncRpcClient(thread.endpoint, timeout_s=5)
        assert asyncio.run(client.call("echo", {"loop": 1})) == {"loop": 1}
        assert asyncio.run(client.call("echo", {"loop": 2})) == {"loop": 2}
        client.close()


# ---------------------------------------------------------------- malformed frames


def test_malformed_requests_are_answered_or_dropped_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        server = RpcServer(ANY_PORT, HANDLERS)
        await server.start()
        serve = asyncio.create_task(server.serve())
        raw = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(server.bound_endpoint)
        try:
            # Undecodable, not a map, and a map without an id: dropped and counted.
            for frame in (b"\xc1\xc1", pack_rpc(["echo"]), pack_rpc({"method": "echo"})):
                await raw.send(frame)
            await wait_until(lambda: server.stats.dropped == 3)
            assert server.stats.malformed == 3

            # An id but no usable method or params: a structured error.
            await raw.send(pack_rpc({"id": "r1", "method": 7}))
            reply = unpack_rpc(await raw.recv())
            assert reply["id"] == "r1"
            assert reply["ok"] is False
            assert reply["error"]["code"] == "validation_failed"
            assert "method" in reply["error"]["message"]

            await raw.send(pack_rpc({"id": 2, "method": "echo", "params": [1]}))
            reply = unpack_rpc(await raw.recv())
            assert (reply["id"], reply["error"]["code"]) == (2, "validation_failed")
            assert server.stats.malformed == 5

            # A REQ-style envelope (empty delimiter) is echoed back intact.
            await raw.send_multipart([b"", pack_rpc({"id": "r3", "method": "echo"})])
            assert await raw.recv_multipart() == [
                b"",
                pack_rpc({"id": "r3", "ok": True, "result": {}}),
            ]

            async with AsyncRpcClient(server.bound_endpoint, timeout_s=5) as client:
                assert await client.call("echo", {"ok": 1}) == {"ok": 1}
            assert server.stats.requests == 7
        finally:
            raw.close(linger=0)
            await server.close()
            await serve

    run(main)
