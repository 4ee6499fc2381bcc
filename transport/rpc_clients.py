"""RPC clients on a DEALER socket: ``RpcClient`` (sync, one call at a time) and
``AsyncRpcClient`` (many concurrent calls), matching replies to calls by id.

A request's map carries ``id``, ``method``, ``token`` (when set) and then
``params``, so that the server checks the token before it reads the params.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from uuid import uuid4

import zmq
import zmq.asyncio

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.clock import Clock
from marmot.engine.errors import (
    DaemonUnavailable,
    InternalError,
    LimitExceeded,
    MarmotError,
    ValidationFailed,
    from_wire,
)
from marmot.transport.codec import pack_rpc, unpack_rpc
from marmot.transport.curve import ClientCurve
from marmot.transport.rpc_frames import DEFAULT_MAX_REQUEST_BYTES

__all__ = ["AsyncRpcClient", "RpcClient"]

_S = TypeVar("_S", bound="zmq.Socket[Any]")

log = logging.getLogger(__name__)


def _new_request(
    method: str, params: Mapping[str, Any] | None, token: str | None
) -> dict[str, Any]:
    request: dict[str, Any] = {"id": uuid4().hex, "method": method}
    if token is not None:
        # Ahead of params: the server reads the token without reading past it.
        request["token"] = token
    request["params"] = dict(params or {})
    return request


def _packed_request(request: dict[str, Any], max_request_bytes: int) -> bytes:
    """The request as it goes on the wire; raises ``LimitExceeded`` when over the limit."""
    data = pack_rpc(request)
    if len(data) > max_request_bytes:
        raise LimitExceeded(
            f"a {request['method']} request of {len(data)} bytes is over the limit of "
            f"{max_request_bytes}; send less per call (e.g. fewer events)",
            details={"size": len(data), "limit": max_request_bytes},
        )
    return data


def _parse_reply(data: bytes) -> dict[str, Any] | None:
    """A reply map, or None for a frame that is not one (it is then ignored)."""
    try:
        reply = unpack_rpc(data)
    except ValidationFailed:
        log.warning("ignored an undecodable RPC reply")
        return None
    return reply if isinstance(reply, dict) else None


def _outcome(reply: Mapping[str, Any]) -> Any:
    """The reply's result, or its error raised as the matching ``MarmotError``."""
    if reply.get("ok") is True:
        return reply.get("result")
    error = reply.get("error")
    if isinstance(error, dict):
        raise from_wire(error)
    raise InternalError("the server sent an error reply without an error")


def _timed_out(endpoint: str, timeout_s: float) -> DaemonUnavailable:
    return DaemonUnavailable(f"no reply from {endpoint} within {timeout_s:g} s")


class RpcClient:
    """A synchronous RPC client on a DEALER socket; one call at a time (a lock guards it).

    After a time-out the socket is replaced, so a late reply can never be
    taken for the next call's (replies are matched by id as well).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        curve: ClientCurve | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_request_bytes = max_request_bytes
        self._token = token
        self._curve = curve
        self._clock = clock
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socket: zmq.Socket[bytes] | None = None
        self._lock = threading.Lock()
        self._is_closed = False

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket; later calls raise ``RuntimeError``."""
        with self._lock:
            self._is_closed = True
            self._discard_socket()

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """Call ``method``; returns its result or raises the server's ``MarmotError``.

        Raises ``DaemonUnavailable`` when no reply arrives within the time-out,
        ``LimitExceeded`` (without sending) when the request is too large.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        request = _new_request(method, params, self._token)
        data = _packed_request(request, self.max_request_bytes)
        with self._lock:
            if self._is_closed:
                raise RuntimeError("the RPC client is closed")
            try:
                reply = self._exchange(data, request["id"], timeout)
            except DaemonUnavailable:
                self._discard_socket()
                raise
        return _outcome(reply)

    def _connected(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            self._socket = _dealer(self._context, self.endpoint, self._curve)
        return self._socket

    def _discard_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _exchange(self, data: bytes, request_id: str, timeout: float) -> dict[str, Any]:
        """Send a request and wait for the reply with its id, until ``timeout`` has passed."""
        now = self._clock.monotonic
        deadline = now() + timeout
        socket = self._connected()
        if not _wait(socket, zmq.POLLOUT, deadline, now):
            raise _timed_out(self.endpoint, timeout)  # not even connected
        socket.send(data, flags=zmq.NOBLOCK)
        while _wait(socket, zmq.POLLIN, deadline, now):
            reply = _parse_reply(socket.recv_multipart(flags=zmq.NOBLOCK)[-1])
            if reply is not None and reply.get("id") == request_id:
                return reply
            # a stale reply to a call that already timed out, or garbage: skip it
        raise _timed_out(self.endpoint, timeout)


def _dealer(context: zmq.Context[_S], endpoint: str, curve: ClientCurve | None = None) -> _S:
    """A DEALER socket connected to ``endpoint`` (the context decides sync or asyncio),
    a CURVE client when ``curve`` is given."""
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.secure(socket)
    # Queue requests only on live connections: a request sent while the daemon
    # is away is not delivered late to the next daemon that comes up.
    socket.setsockopt(zmq.IMMEDIATE, 1)
    try:
        socket.connect(endpoint)
    except zmq.ZMQError as exc:
        socket.close(linger=0)
        raise DaemonUnavailable(f"cannot connect to {endpoint}: {exc}") from None
    return socket


def _wait(socket: zmq.Socket[bytes], event: int, deadline: float, now: Callable[[], float]) -> bool:
    """Whether ``socket`` becomes ready for ``event`` before ``deadline`` (on ``now``)."""
    remaining_ms = math.ceil((deadline - now()) * 1000)
    if remaining_ms <= 0:
        return bool(socket.poll(0, event))
    return bool(socket.poll(remaining_ms, event))


class AsyncRpcClient:
    """An asyncio RPC client; many ``call``s may run concurrently on one client.

    One reader task hands each reply to the call waiting for its id; replies
    nobody waits for any more (their call timed out) are dropped.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        curve: ClientCurve | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_request_bytes = max_request_bytes
        self._token = token
        self._curve = curve
        self._context = zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._is_closed = False

    async def __aenter__(self) -> AsyncRpcClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket and fail calls in flight; later calls raise ``RuntimeError``."""
        self._is_closed = True
        self._shut_down(DaemonUnavailable("the RPC client was closed"))

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """Call ``method``; returns its result or raises the server's ``MarmotError``.

        Raises ``DaemonUnavailable`` when no reply arrives within the time-out,
        ``LimitExceeded`` (without sending) when the request is too large.
        """
        if self._is_closed:
            raise RuntimeError("the RPC client is closed")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        request = _new_request(method, params, self._token)
        data = _packed_request(request, self.max_request_bytes)
        socket = self._connected()
        request_id: str = request["id"]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout):
                await socket.send(data)
                reply = await future
        except TimeoutError:
            raise _timed_out(self.endpoint, timeout) from None
        finally:
            self._pending.pop(request_id, None)
        return _outcome(reply)

    def _connected(self) -> zmq.asyncio.Socket:
        loop = asyncio.get_running_loop()
        if self._socket is None or self._loop is not loop:
            # First call, or a new event loop (asyncio.run again): sockets and
            # tasks belong to the loop they were made in.
            self._shut_down(DaemonUnavailable("the event loop changed"))
            socket = _dealer(self._context, self.endpoint, self._curve)
            self._socket = socket
            self._loop = loop
            self._reader = loop.create_task(self._read(socket))
            return socket
        return self._socket

    def _shut_down(self, error: MarmotError) -> None:
        if self._reader is not None and not self._reader.done():
            loop = self._reader.get_loop()
            if not loop.is_closed():
                self._reader.cancel()
        self._reader = None
        for future in self._pending.values():
            if not future.done() and not future.get_loop().is_closed():
                future.set_exception(error)
        self._pending.clear()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._loop = None

    async def _read(self, socket: zmq.asyncio.Socket) -> None:
        try:
            while True:
                frames = await socket.recv_multipart()
                reply = _parse_reply(frames[-1])
                if reply is None:
                    continue
                request_id = reply.get("id")
                future = self._pending.get(request_id) if isinstance(request_id, str) else None
                if future is not None and not future.done():
                    future.set_result(reply)
        except zmq.ZMQError as exc:
            log.warning("the RPC client's socket failed: %s", exc)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(DaemonUnavailable(f"{self.endpoint}: {exc}"))
            if self._socket is socket:  # the next call starts afresh
                socket.close(linger=0)
                self._socket = None
                self._reader = None
