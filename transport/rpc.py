"""ZeroMQ request/reply for the daemon's API: ``RpcServer`` (ROUTER) and clients (DEALER).

A request is ``{"id", "method", "params", "token"?}``; the reply is
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {code,
message, details}}``, every frame packed with ``codec.pack_rpc``. Clients raise
the server's error as its ``MarmotError`` subclass, and ``DaemonUnavailable``
when no reply comes in time. A request is at most ``max_request_bytes``
packed: clients refuse to send a larger one, the server's socket drops it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar
from uuid import uuid4

import zmq
import zmq.asyncio
from pydantic import ValidationError

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.metrics import Metrics
from marmot.engine.clock import Clock
from marmot.engine.errors import (
    DaemonUnavailable,
    InternalError,
    LimitExceeded,
    MarmotError,
    NotFound,
    Unauthorized,
    ValidationFailed,
    from_wire,
)
from marmot.transport.codec import pack_rpc, unpack_rpc
from marmot.transport.curve import ClientCurve, CurveServer

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "AsyncRpcClient",
    "Handler",
    "RpcClient",
    "RpcServer",
    "RpcStats",
]

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
_S = TypeVar("_S", bound="zmq.Socket[Any]")

log = logging.getLogger(__name__)

# What ``pack`` raises for a value it cannot encode.
_PACK_ERRORS: Final = (TypeError, ValueError, OverflowError)
# Ample for a thousand events per call (the CLI's chunk) and any automation,
# and it bounds what one frame can make the server allocate: unpacking may
# grow a frame ~70x (a one-byte empty map becomes a Python dict).
DEFAULT_MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024


@dataclass(slots=True)
class RpcStats:
    """Counters of an ``RpcServer``: frames received, error replies by code, bad frames."""

    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    dropped: int = 0


# ---------------------------------------------------------------- wire helpers


def _error_reply(request_id: Any, error: MarmotError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error.to_wire()}


def _validation_error(exc: ValidationError) -> ValidationFailed:
    """A pydantic error as ``validation_failed`` with its field paths as details."""
    details = [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e["loc"]],
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in exc.errors(include_url=False)
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid"}
    where = ".".join(str(p) for p in first["loc"]) or "params"
    count = len(details)
    noun = "error" if count == 1 else "errors"
    return ValidationFailed(f"{count} validation {noun}: {where}: {first['msg']}", details=details)


def _request_id(request: Any) -> str | int | None:
    """The id a reply can echo, or None when the request has no usable one."""
    if isinstance(request, dict):
        request_id = request.get("id")
        if isinstance(request_id, str | int) and not isinstance(request_id, bool):
            return request_id
    return None


def _new_request(
    method: str, params: Mapping[str, Any] | None, token: str | None
) -> dict[str, Any]:
    request: dict[str, Any] = {"id": uuid4().hex, "method": method, "params": dict(params or {})}
    if token is not None:
        request["token"] = token
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


def _check_token(expected: str, request: Mapping[str, Any]) -> None:
    given = request.get("token")
    if given is None:
        raise Unauthorized("this daemon requires a token")
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    ):
        raise Unauthorized("invalid token")


# ---------------------------------------------------------------- server


class RpcServer:
    """Serves ``handlers`` (method name -> coroutine of params) on a ROUTER socket.

    Each request runs in its own task, so a slow handler does not hold up the
    others; bad frames are answered with an error when they carry an ``id``
    and dropped (and counted) otherwise. A peer that sends a frame over
    ``max_request_bytes`` is disconnected by ZeroMQ before the frame is read.
    The server never dies of its input.
    """

    def __init__(
        self,
        endpoint: str,
        handlers: Mapping[str, Handler],
        *,
        token: str | None = None,
        context: zmq.asyncio.Context | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        curve: CurveServer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``metrics`` counts every request by method and outcome
        (``marmot_rpc_requests``); ``stats`` keeps the same counts in process."""
        self.endpoint = endpoint
        self.max_request_bytes = max_request_bytes
        self.stats = RpcStats()
        self._metrics = metrics or Metrics()
        self._handlers = dict(handlers)
        self._token = token
        self._curve = curve
        self._context = context if context is not None else zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket | None = None
        self._bound: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._is_closed = False

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (a ``*`` port resolved); raises before ``start()``."""
        if self._bound is None:
            raise RuntimeError("the RPC server is not started")
        return self._bound

    def swap_handlers(self, handlers: Mapping[str, Handler]) -> None:
        """Answer with ``handlers`` from now on, in one step.

        A request whose handler has not been looked up yet gets the new table;
        handlers already running finish. A starting daemon serves a small table
        and swaps in its full API once it is ready.
        """
        self._handlers = dict(handlers)

    async def start(self) -> None:
        """Bind the socket; raises ``zmq.ZMQError`` when the endpoint cannot be bound."""
        if self._socket is not None:
            return
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_request_bytes)
        try:
            if self._curve is not None:
                self._curve.secure(socket)
            socket.bind(self.endpoint)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        last = socket.getsockopt(zmq.LAST_ENDPOINT)
        self._bound = last.decode() if isinstance(last, bytes) else str(last)
        self._socket = socket
        self._is_closed = False

    async def serve(self) -> None:
        """Receive and answer requests until cancelled or closed."""
        await self.start()
        socket = self._socket
        assert socket is not None
        while True:
            try:
                frames = await socket.recv_multipart()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._is_closed and task is not None and not task.cancelling():
                    return  # close() cancelled the pending receive
                raise
            except zmq.ZMQError:
                if self._is_closed:
                    return
                raise
            self._spawn(frames)

    async def close(self) -> None:
        """Stop answering: cancel requests in flight and close the socket."""
        self._is_closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _spawn(self, frames: list[bytes]) -> None:
        self.stats.requests += 1
        if len(frames) < 2:  # a ROUTER always prefixes the peer's identity
            self._drop("a frame without an envelope")
            return
        task = asyncio.create_task(self._answer(frames[:-1], frames[-1]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop(self, why: str) -> None:
        self.stats.malformed += 1
        self.stats.dropped += 1
        self._metrics.rpc_requests.labels("", "dropped").inc()
        log.warning("dropped a malformed RPC request: %s", why)

    async def _answer(self, envelope: list[bytes], body: bytes) -> None:
        try:
            request = unpack_rpc(body)
        except ValidationFailed:
            self._drop("not msgpack")
            return
        request_id = _request_id(request)
        if request_id is None:
            self._drop("no id to answer to")
            return
        reply = await self._reply_to(request_id, request)
        await self._send(envelope, reply)

    async def _reply_to(self, request_id: str | int, request: dict[str, Any]) -> dict[str, Any]:
        method = request.get("method")
        if not isinstance(method, str):
            self.stats.malformed += 1
            return self._fail(request_id, ValidationFailed("a request needs a string 'method'"))
        params = request.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            self.stats.malformed += 1
            return self._fail(request_id, ValidationFailed("'params' must be a map"))
        try:
            if self._token is not None:
                _check_token(self._token, request)
            handler = self._handlers.get(method)
            if handler is None:
                raise NotFound(f"unknown method {method!r}")
            result = await handler(params)
        except MarmotError as exc:
            return self._fail(request_id, exc, method)
        except ValidationError as exc:
            return self._fail(request_id, _validation_error(exc), method)
        except Exception as exc:
            log.exception("RPC method %s failed", method, extra={"method": method})
            return self._fail(request_id, InternalError(str(exc) or type(exc).__name__), method)
        self._metrics.rpc_requests.labels(self._known(method), "ok").inc()
        return {"id": request_id, "ok": True, "result": result}

    def _known(self, method: str) -> str:
        # Label values stay bounded: an unknown name is counted as "unknown".
        return method if method in self._handlers else "unknown"

    def _fail(self, request_id: str | int, error: MarmotError, method: str = "") -> dict[str, Any]:
        self.stats.errors[error.code] += 1
        self._metrics.rpc_requests.labels(self._known(method) if method else "", error.code).inc()
        return _error_reply(request_id, error)

    def _encode(self, reply: dict[str, Any]) -> bytes:
        try:
            return pack_rpc(reply)
        except _PACK_ERRORS as exc:
            log.exception("could not encode an RPC reply", extra={"request_id": reply["id"]})
            error = InternalError(f"the reply could not be encoded: {exc}")
            return pack_rpc(self._fail(reply["id"], error))

    async def _send(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        data = self._encode(reply)
        socket = self._socket
        if socket is None:
            return  # closed while the handler ran
        async with self._send_lock:
            try:
                await socket.send_multipart([*envelope, data])
            except zmq.ZMQError as exc:
                self.stats.errors["send_failed"] += 1
                log.warning("could not send an RPC reply: %s", exc)


# ---------------------------------------------------------------- clients


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
