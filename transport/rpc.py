"""ZeroMQ request/reply for the daemon's API: the ``RpcServer`` (ROUTER) and the wire
contract its clients (``rpc_clients``, DEALER) share.

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
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import zmq
import zmq.asyncio
from pydantic import ValidationError

from marmot.actors.metrics import Metrics
from marmot.engine.errors import (
    InternalError,
    MarmotError,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from marmot.transport.codec import pack_rpc, unpack_rpc
from marmot.transport.curve import CurveServer

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "Handler",
    "RpcServer",
    "RpcStats",
]

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

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
