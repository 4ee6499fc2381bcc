"""The RPC server's bounds over real ZeroMQ sockets on 127.0.0.1: replies a peer does
not read, replies too large, tokens checked before decoding, frames dropped and
counted, big frames decoded off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgpack
import pytest
import zmq
import zmq.asyncio

from marmot.actors.metrics import Metrics
from marmot.engine.clock import ManualClock
from marmot.engine.errors import LimitExceeded
from marmot.transport.codec import pack_rpc, unpack_rpc
from marmot.transport.rpc import Handler, RpcServer
from marmot.transport.rpc_clients import AsyncRpcClient, _new_request

ANY_PORT = "tcp://127.0.0.1:*"
T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]], timeout_s: float = 60) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await main()

    return asyncio.run(bounded())


async def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def deaf_dealer(endpoint: str) -> zmq.asyncio.Socket:
    """A DEALER that never reads: ZeroMQ takes one message for it, the kernel 4 KB."""
    socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVHWM, 1)
    socket.setsockopt(zmq.RCVBUF, 4096)
    socket.connect(endpoint)
    return socket


async def echo(params: dict[str, Any]) -> Any:
    return params


class Serving:
    """An RpcServer on this event loop, with its serve task."""

    def __init__(self, handlers: dict[str, Handler], **options: Any) -> None:
        self.metrics = Metrics()
        self.server = RpcServer(ANY_PORT, handlers, metrics=self.metrics, **options)
        self._serve: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Serving:
        await self.server.start()
        self._serve = asyncio.create_task(self.server.serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()
        assert self._serve is not None
        await self._serve

    @property
    def endpoint(self) -> str:
        return self.server.bound_endpoint

    def is_idle(self) -> bool:
        return not self.server._tasks


# ---------------------------------------------------------------- replies nobody reads


def test_replies_a_peer_does_not_read_are_bounded_and_its_requests_are_dropped_unrun() -> None:
    ran = 0

    async def big(params: dict[str, Any]) -> Any:
        nonlocal ran
        ran += 1
        return "x" * 256 * 1024

    async def main() -> None:
        budget = 1024 * 1024
        async with Serving({"big": big, "echo": echo}, max_unread_bytes=budget) as serving:
            server = serving.server
            deaf = deaf_dealer(serving.endpoint)
            try:
                for n in range(200):
                    await deaf.send(pack_rpc({"id": n, "method": "big"}))
                await wait_until(lambda: server.stats.requests == 200 and serving.is_idle())
                # What the server still holds for it is within its budget (the kernel's
                # socket buffers took some)...
                assert server.unread_reply_bytes() <= budget
                # ...its replies past that were dropped, and its requests after a drop
                # were not run at all...
                dropped_replies = server.stats.reply_drops["unread"]
                dropped_requests = server.stats.drops["unread_replies"]
                assert dropped_replies >= 1
                assert dropped_requests >= 100
                assert ran == 200 - dropped_requests < 100
                # ...every drop is counted by reason...
                replies = counted(
                    serving.metrics, "marmot_rpc_replies_dropped_total", reason="unread"
                )
                assert replies == dropped_replies
                requests = counted(
                    serving.metrics, "marmot_rpc_requests_dropped_total", reason="unread_replies"
                )
                assert requests == dropped_requests
                # ...and a client that reads is served all along.
                async with AsyncRpcClient(serving.endpoint, timeout_s=5) as client:
                    assert await client.call("echo", {"still": "here"}) == {"still": "here"}
            finally:
                deaf.close(linger=0)
            # Once the peer is gone, ZeroMQ lets go of what it held for it.
            await wait_until(lambda: server.unread_reply_bytes() == 0)

    run(main)


def test_a_full_zeromq_queue_to_a_peer_drops_replies_and_counts_them() -> None:
    async def small(params: dict[str, Any]) -> Any:
        return "y" * 8 * 1024  # copied into ZeroMQ, not tracked: its queue bounds them

    async def main() -> None:
        async with Serving({"small": small}, max_unread_bytes=1024 * 1024) as serving:
            server = serving.server
            deaf = deaf_dealer(serving.endpoint)
            try:
                for n in range(3000):
                    await deaf.send(pack_rpc({"id": n, "method": "small"}))
                await wait_until(lambda: server.stats.requests == 3000 and serving.is_idle())
            finally:
                deaf.close(linger=0)
            dropped = server.stats.reply_drops["unread"]
            assert dropped >= 1
            assert counted(
                serving.metrics, "marmot_rpc_replies_dropped_total", reason="unread"
            ) == (dropped)
            assert server.stats.drops["unread_replies"] >= 1

    run(main)


def test_a_peer_that_reads_again_is_served_again() -> None:
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))

    async def big(params: dict[str, Any]) -> Any:
        return "x" * 256 * 1024

    async def main() -> None:
        async with Serving({"big": big}, max_unread_bytes=512 * 1024, clock=clock) as serving:
            server = serving.server
            slow = deaf_dealer(serving.endpoint)
            slow.setsockopt(zmq.RCVHWM, 1000)
            try:
                for n in range(60):
                    await slow.send(pack_rpc({"id": n, "method": "big"}))
                await wait_until(lambda: server.stats.requests == 60 and serving.is_idle())
                assert server.stats.drops["unread_replies"] > 0
                answered = 0
                while await slow.poll(200):  # it reads what it was sent
                    await slow.recv_multipart()
                    answered += 1
                assert 0 < answered < 60
                clock.advance(timedelta(seconds=1))  # the refusal after a drop is over
                await wait_until(lambda: server.unread_reply_bytes() == 0)
                await slow.send(pack_rpc({"id": "again", "method": "big"}))
                assert await slow.poll(5000)
                reply = unpack_rpc((await slow.recv_multipart())[-1])
                assert (reply["id"], reply["ok"]) == ("again", True)
            finally:
                slow.close(linger=0)

    run(main)


# ---------------------------------------------------------------- one reply too large


def test_a_reply_over_max_reply_bytes_is_answered_with_limit_exceeded() -> None:
    async def huge(params: dict[str, Any]) -> Any:
        return "z" * (2 * 1024 * 1024)

    async def main() -> None:
        async with Serving({"huge": huge, "echo": echo}, max_reply_bytes=1024 * 1024) as serving:
            async with AsyncRpcClient(serving.endpoint, timeout_s=5) as client:
                with pytest.raises(LimitExceeded) as refused:
                    await client.call("huge")
                assert await client.call("echo", {"n": 1}) == {"n": 1}
            assert "max_reply_bytes" in refused.value.message
            assert refused.value.details["limit"] == 1024 * 1024
            metrics = serving.metrics
            assert counted(metrics, "marmot_rpc_replies_dropped_total", reason="too_large") == 1
            outcome = {"method": "huge", "outcome": "limit_exceeded"}
            assert counted(metrics, "marmot_rpc_requests_total", **outcome) == 1
            assert counted(metrics, "marmot_rpc_requests_total", method="huge", outcome="ok") == 0

    run(main)


# ---------------------------------------------------------------- tokens before decoding


def test_a_bad_token_is_refused_without_decoding_the_params() -> None:
    """The params here do not even decode (a string of broken UTF-8): a server that
    decoded the frame before checking the token would drop it unanswered."""

    async def main() -> None:
        async with Serving({"echo": echo}, token="s3cret") as serving:
            raw = zmq.asyncio.Context.instance().socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(serving.endpoint)
            try:
                await raw.send(_with_broken_params("wrong"))
                assert await raw.poll(5000)
                reply = unpack_rpc(await raw.recv())
                assert (reply["id"], reply["error"]["code"]) == ("r1", "unauthorized")
                # With the right token, the same params are decoded, and dropped.
                await raw.send(_with_broken_params("s3cret"))
                await wait_until(lambda: serving.server.stats.drops["undecodable"] == 1)
            finally:
                raw.close(linger=0)

    run(main)


def _with_broken_params(token: str) -> bytes:
    """``{"id", "method", "token", "params"}`` whose params hold a string of bad UTF-8."""
    head = msgpack.packb({"id": "r1", "method": "echo", "token": token})
    broken = msgpack.packb({"text": b"\xff\xfe"}, use_bin_type=False)
    return bytes([head[0] + 1]) + head[1:] + msgpack.packb("params") + broken


def test_clients_send_the_token_ahead_of_the_params() -> None:
    request = _new_request("events.filter", {"limit": 5}, "s3cret")

    assert list(request) == ["id", "method", "token", "params"]
    assert list(_new_request("health", None, None)) == ["id", "method", "params"]


# ---------------------------------------------------------------- frames dropped


def test_frames_without_a_usable_id_are_counted_by_reason_and_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))

    async def main() -> None:
        async with Serving({"echo": echo}, clock=clock) as serving:
            server = serving.server
            raw = zmq.asyncio.Context.instance().socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(serving.endpoint)
            frames = {
                "undecodable": [b"\xc1", b"\x82\xa2id", b""],
                "not_a_map": [pack_rpc(["echo"]), pack_rpc(7)],
                "no_id": [pack_rpc({"method": "echo"}), pack_rpc({"id": [1], "method": "echo"})],
            }
            try:
                with caplog.at_level(logging.WARNING, "marmot.transport.rpc"):
                    for batch in frames.values():
                        for frame in batch:
                            await raw.send(frame)
                    await wait_until(lambda: server.stats.dropped == 7)
                    clock.advance(timedelta(seconds=5))
                    await raw.send(b"\xc1")
                    await wait_until(lambda: server.stats.dropped == 8)
            finally:
                raw.close(linger=0)
            for reason, batch in frames.items():
                extra = 1 if reason == "undecodable" else 0
                total = counted(serving.metrics, "marmot_rpc_requests_dropped_total", reason=reason)
                assert total == len(batch) + extra, reason
            lines = [r for r in caplog.records if r.name == "marmot.transport.rpc"]
            assert sorted(r.__dict__["reason"] for r in lines) == [
                "no_id",
                "not_a_map",
                "undecodable",
                "undecodable",
            ]
            assert "(2 more dropped since the last line)" in lines[-1].getMessage()

    run(main)


# ---------------------------------------------------------------- big frames


def test_a_big_frame_is_decoded_while_the_event_loop_keeps_running() -> None:
    async def count(params: dict[str, Any]) -> Any:
        return len(params["events"])

    events = [{"occurred": "2026-03-01T09:00:00Z", "tags": [{}] * 20}] * 120_000
    frame = pack_rpc({"id": "big", "method": "count", "params": {"events": events}})

    async def main() -> tuple[float, float]:
        async with Serving({"count": count}) as serving:
            raw = zmq.asyncio.Context.instance().socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(serving.endpoint)
            worst_lag = 0.0

            async def watch() -> None:
                nonlocal worst_lag
                while True:
                    before = time.monotonic()
                    await asyncio.sleep(0.01)
                    worst_lag = max(worst_lag, time.monotonic() - before - 0.01)

            watcher = asyncio.create_task(watch())
            try:
                started = time.monotonic()
                await raw.send(frame)
                assert await raw.poll(60_000)
                took = time.monotonic() - started
                reply = unpack_rpc(await raw.recv())
                assert reply == {"id": "big", "ok": True, "result": 120_000}
            finally:
                watcher.cancel()
                raw.close(linger=0)
            return took, worst_lag

    took, worst_lag = run(main)
    assert took > 0.3  # decoding took a while...
    assert worst_lag < took / 3  # ...and the loop did not wait for it
