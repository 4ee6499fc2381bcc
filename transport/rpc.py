"""ZeroMQ request/reply for the daemon's API: the ``RpcServer`` (ROUTER) and the wire
contract its clients (``rpc_clients``, DEALER) share.

A request is ``{"id", "method", "params", "token"?}``; the reply is
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {code,
message, details}}``, every frame packed with ``codec.pack_rpc``. Clients raise
the server's error as its ``MarmotError`` subclass, and ``DaemonUnavailable``
when no reply comes in time.

Requests are checked cheapest first. ZeroMQ hangs up on a peer whose frame is
over ``max_request_bytes`` before reading it (clients refuse to send one). The
server then reads only the request map's ``id``, ``method`` and ``token``,
skipping the other values without building them, and refuses a bad token
before it decodes ``params``. Frames over 64 KiB are decoded on a worker
thread, one at a time and a value at a time, so the event loop runs meanwhile.
Clients send ``token`` ahead of ``params``, so that this read stops early; the
wire is otherwise unchanged (a map's key order never mattered).

Replies are bounded by bytes. One reply is at most ``max_reply_bytes``: a
larger result is answered with ``limit_exceeded`` instead. Replies a peer has
not taken yet are bounded per connection: those of 64 KiB or more count by
their size until ZeroMQ has handed them to the kernel, up to
``max_unread_bytes``; ZeroMQ queues at most ``max_unread_bytes // 64 KiB``
messages for the peer (SNDHWM; ``ROUTER_MANDATORY`` turns a full queue into an
error instead of a silent loss). A peer that reads nothing thus holds at most
twice ``max_unread_bytes`` here. A reply over the budget is dropped, and so are
the peer's requests, unread and not run, while it is over the budget and for a
second after a drop; a peer has at most 64 requests running at a time. Every
frame dropped is counted by reason (``marmot_rpc_requests_dropped``,
``marmot_rpc_replies_dropped``) and logged, one line per reason every 5 s at
most.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import zmq
import zmq.asyncio
from pydantic import ValidationError

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.metrics import Metrics
from marmot.actors.throttle import LogThrottle
from marmot.engine.clock import Clock
from marmot.engine.errors import (
    InternalError,
    LimitExceeded,
    MarmotError,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from marmot.transport.codec import pack_rpc, unpack_rpc
from marmot.transport.curve import CurveServer
from marmot.transport.rpc_frames import (
    DEFAULT_MAX_REQUEST_BYTES,
    NOT_A_MAP,
    UNDECODABLE,
    Header,
    Unreadable,
    decode_in_steps,
    read_header,
)

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_UNREAD_BYTES",
    "Handler",
    "RpcServer",
    "RpcStats",
]

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

log = logging.getLogger(__name__)

# What ``pack`` raises for a value it cannot encode.
_PACK_ERRORS: Final = (TypeError, ValueError, OverflowError)
# One reply at most (events.filter pages well under it: rpc.page_bytes).
DEFAULT_MAX_REPLY_BYTES: Final = 16 * 1024 * 1024
# Replies of 64 KiB or more a peer has not taken yet, per connection.
DEFAULT_MAX_UNREAD_BYTES: Final = 64 * 1024 * 1024
# Frames up to this size are decoded on the event loop (a millisecond or so).
_INLINE_DECODE_BYTES: Final = 64 * 1024
# Replies from this size on are sent without a copy and tracked until ZeroMQ
# has handed them to the kernel (pyzmq copies smaller ones: nothing to track).
_TRACKED_BYTES: Final = zmq.COPY_THRESHOLD
# ZeroMQ's queue per peer, in messages (SNDHWM): max_unread_bytes // _TRACKED_BYTES
# within these bounds (a burst of small replies to a reading peer must fit).
_MIN_QUEUE: Final = 64
_MAX_QUEUE: Final = 1000
_MAX_RUNNING_PER_PEER: Final = 64
# How long a peer's requests are dropped after one of its replies was.
_REFUSAL_S: Final = 1.0
# Peers remembered before the idle ones are forgotten.
_PEERS_KEPT: Final = 256
_LOG_INTERVAL_S: Final = 5.0

# Why a request is dropped unanswered: the reason label of marmot_rpc_requests_dropped.
NO_ENVELOPE: Final = "no_envelope"
NO_ID: Final = "no_id"
UNREAD_REPLIES: Final = "unread_replies"
_WHY: Final = {
    NO_ENVELOPE: "a frame without the peer's identity",
    UNDECODABLE: "not one msgpack value",
    NOT_A_MAP: "msgpack, but not a map",
    NO_ID: "a map without a string or integer 'id' to answer to",
    UNREAD_REPLIES: "the peer has not read its earlier replies",
}
# Why a reply is not sent as it was: the reason label of marmot_rpc_replies_dropped.
TOO_LARGE: Final = "too_large"  # answered with limit_exceeded instead
UNREAD: Final = "unread"
PEER_GONE: Final = "peer_gone"
SEND_FAILED: Final = "send_failed"


@dataclass(slots=True)
class RpcStats:
    """Counters of an ``RpcServer``: frames received, error replies by code, bad
    frames, and frames dropped (requests and replies) by reason."""

    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    dropped: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    reply_drops: Counter[str] = field(default_factory=Counter)


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
    return ValidationFailed.from_details(details)


def _check_token(expected: str, given: Any) -> None:
    if given is None:
        raise Unauthorized("this daemon requires a token")
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    ):
        raise Unauthorized("invalid token")


# ---------------------------------------------------------------- peers


def _send_now(socket: zmq.asyncio.Socket, parts: list[Any], *, copy: bool = True) -> None:
    """Send a message or raise ``zmq.Again`` (no room for it) or ``zmq.ZMQError``.

    pyzmq completes a DONTWAIT send at once when no other send waits (none ever
    does here); the asyncio socket is used rather than a blocking twin so that
    it still notices the readable edge a send may take.
    """
    sent = cast("asyncio.Future[Any]", socket.send_multipart(parts, flags=zmq.DONTWAIT, copy=copy))
    sent.result()


class _Peer:
    """One connection as the server sees it: its requests running, and its replies
    of ``_TRACKED_BYTES`` or more that ZeroMQ has not yet handed to the kernel."""

    __slots__ = ("refused_until", "running", "slots", "unread", "unread_bytes")

    def __init__(self) -> None:
        self.slots = asyncio.Semaphore(_MAX_RUNNING_PER_PEER)
        self.running = 0
        self.unread: deque[tuple[zmq.MessageTracker, int]] = deque()
        self.unread_bytes = 0
        self.refused_until = float("-inf")

    def unread_now(self) -> int:
        """Bytes of replies still waiting; forgets those handed over (in order)."""
        unread = self.unread
        while unread and unread[0][0].done:
            self.unread_bytes -= unread.popleft()[1]
        return self.unread_bytes

    def is_idle(self, now: float) -> bool:
        return self.running == 0 and now >= self.refused_until and self.unread_now() == 0


# ---------------------------------------------------------------- server


class RpcServer:
    """Serves ``handlers`` (method name -> coroutine of params) on a ROUTER socket.

    Each request runs in its own task, so a slow handler does not hold up the
    others; bad frames are answered with an error when they carry an ``id``
    and dropped (counted and logged) otherwise; replies are bounded as the
    module says. The server never dies of its input.
    """

    def __init__(
        self,
        endpoint: str,
        handlers: Mapping[str, Handler],
        *,
        token: str | None = None,
        context: zmq.asyncio.Context | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        max_unread_bytes: int = DEFAULT_MAX_UNREAD_BYTES,
        curve: CurveServer | None = None,
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``metrics`` counts every request by method and outcome
        (``marmot_rpc_requests``) and every dropped frame by reason; ``stats``
        keeps the same counts in process."""
        self.endpoint = endpoint
        self.max_request_bytes = max_request_bytes
        self.max_reply_bytes = max_reply_bytes
        self.max_unread_bytes = max_unread_bytes
        self.stats = RpcStats()
        self._metrics = metrics or Metrics()
        self._handlers = dict(handlers)
        self._token = token
        self._curve = curve
        self._clock = clock
        self._context = context if context is not None else zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket | None = None
        self._bound: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._peers: dict[bytes, _Peer] = {}
        self._decoding = asyncio.Semaphore(1)  # one big frame decoded at a time
        self._throttle = LogThrottle(_LOG_INTERVAL_S, clock)
        self._is_closed = False

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (a ``*`` port resolved); raises before ``start()``."""
        if self._bound is None:
            raise RuntimeError("the RPC server is not started")
        return self._bound

    def unread_reply_bytes(self) -> int:
        """Bytes of replies (of 64 KiB or more) peers have not taken yet, all peers."""
        return sum(peer.unread_now() for peer in self._peers.values())

    def swap_handlers(self, handlers: Mapping[str, Handler]) -> None:
        """Answer with ``handlers`` from now on, in one step.

        A request whose handler has not been looked up yet gets the new table;
        handlers already running finish. A starting daemon serves a small table
        and swaps in its full API once it is ready.
        """
        self._handlers = dict(handlers)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """Run ``method`` in-process as a request would (the web console's way in):
        the same handler table, so the same rules and states (starting, lost), and
        the same errors, raised as ``MarmotError``. No token: the caller has checked
        its own login. Counted in ``marmot_rpc_requests`` like a request."""
        handler = self._handlers.get(method)
        label = self._label(method)
        try:
            if handler is None:
                raise NotFound(f"unknown method {method!r}")
            result = await handler(params)
        except MarmotError as exc:
            self._fail("", exc, label)
            raise
        except ValidationError as exc:
            invalid = _validation_error(exc)
            self._fail("", invalid, label)
            raise invalid from None
        except Exception as exc:
            log.exception("RPC method %s failed", method, extra={"method": method})
            internal = InternalError(str(exc) or type(exc).__name__)
            self._fail("", internal, label)
            raise internal from exc
        self._metrics.rpc_requests.labels(label, "ok").inc()
        return result

    async def start(self) -> None:
        """Bind the socket; raises ``zmq.ZMQError`` when the endpoint cannot be bound."""
        if self._socket is not None:
            return
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_request_bytes)
        queue = self.max_unread_bytes // _TRACKED_BYTES
        socket.setsockopt(zmq.SNDHWM, min(max(queue, _MIN_QUEUE), _MAX_QUEUE))
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
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
            self._drop(NO_ENVELOPE, frames[0] if frames else b"", b"")
            return
        task = asyncio.create_task(self._answer(frames[:-1], frames[-1]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one request ---------------------------------------------------------------------

    async def _answer(self, envelope: list[bytes], body: bytes) -> None:
        try:
            header = read_header(body, needs_token=self._token is not None)
        except Unreadable as exc:
            self._drop(exc.reason, envelope[0], body)
            return
        if header.id is None:
            self._drop(NO_ID, envelope[0], body)
            return
        identity = envelope[0]
        peer = self._peers.get(identity)
        if peer is None:
            if len(self._peers) >= _PEERS_KEPT:
                self._forget_idle_peers()
            peer = self._peers[identity] = _Peer()
        peer.running += 1
        try:
            async with peer.slots:
                # Checked once the request's turn has come: by then the replies
                # to its predecessors are out (or dropped).
                if self._is_refused(peer):
                    self._drop(UNREAD_REPLIES, identity, body)
                    return
                reply = await self._reply_to(header, body, identity)
                if reply is not None:
                    self._send(envelope, peer, reply, self._label(header.method))
        finally:
            peer.running -= 1
            if peer.is_idle(self._clock.monotonic()):
                self._peers.pop(identity, None)

    def _is_refused(self, peer: _Peer) -> bool:
        return (
            self._clock.monotonic() < peer.refused_until
            or peer.unread_now() >= self.max_unread_bytes
        )

    async def _reply_to(
        self, header: Header, body: bytes, identity: bytes
    ) -> dict[str, Any] | None:
        """The reply (an ``ok`` one not counted yet), or None when the frame is dropped."""
        request_id = header.id
        assert request_id is not None
        method = header.method
        try:
            if self._token is not None:
                _check_token(self._token, header.token)
        except Unauthorized as exc:
            return self._fail(request_id, exc, self._label(method))
        if not isinstance(method, str):
            self.stats.malformed += 1
            return self._fail(request_id, ValidationFailed("a request needs a string 'method'"))
        try:
            request = await self._decode(body)
        except ValidationFailed:
            self._drop(UNDECODABLE, identity, body)
            return None
        params = request.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            self.stats.malformed += 1
            return self._fail(request_id, ValidationFailed("'params' must be a map"))
        try:
            handler = self._handlers.get(method)
            if handler is None:
                raise NotFound(f"unknown method {method!r}")
            result = await handler(params)
        except MarmotError as exc:
            return self._fail(request_id, exc, self._label(method))
        except ValidationError as exc:
            return self._fail(request_id, _validation_error(exc), self._label(method))
        except Exception as exc:
            log.exception("RPC method %s failed", method, extra={"method": method})
            error = InternalError(str(exc) or type(exc).__name__)
            return self._fail(request_id, error, self._label(method))
        return {"id": request_id, "ok": True, "result": result}

    async def _decode(self, body: bytes) -> dict[str, Any]:
        if len(body) <= _INLINE_DECODE_BYTES:
            request = unpack_rpc(body)
        else:
            # One at a time: a frame may grow ~70x as it is decoded.
            async with self._decoding:
                request = await asyncio.to_thread(decode_in_steps, body)
        assert isinstance(request, dict)  # _read_header saw a map
        return request

    def _label(self, method: Any) -> str:
        # Label values stay bounded: an unknown name is counted as "unknown".
        if not isinstance(method, str):
            return ""
        return method if method in self._handlers else "unknown"

    def _fail(self, request_id: str | int, error: MarmotError, label: str = "") -> dict[str, Any]:
        self.stats.errors[error.code] += 1
        self._metrics.rpc_requests.labels(label, error.code).inc()
        return _error_reply(request_id, error)

    # -- replies -------------------------------------------------------------------------

    def _encode(self, reply: dict[str, Any], label: str) -> bytes:
        """The packed reply, counted by outcome (an ``ok`` one that cannot be
        packed, or is over ``max_reply_bytes``, is answered with an error)."""
        try:
            data = pack_rpc(reply)
        except _PACK_ERRORS as exc:
            log.exception("could not encode an RPC reply", extra={"request_id": reply["id"]})
            error = InternalError(f"the reply could not be encoded: {exc}")
            return pack_rpc(self._fail(reply["id"], error, label))
        if len(data) > self.max_reply_bytes:
            self._drop_reply(TOO_LARGE, len(data), reply["id"])
            too_large = LimitExceeded(
                f"the reply is {len(data)} bytes, over the limit of {self.max_reply_bytes} "
                "(rpc.max_reply_bytes); ask for less",
                details={"size": len(data), "limit": self.max_reply_bytes},
            )
            return pack_rpc(self._fail(reply["id"], too_large, label))
        if reply["ok"]:
            self._metrics.rpc_requests.labels(label, "ok").inc()
        return data

    def _send(self, envelope: list[bytes], peer: _Peer, reply: dict[str, Any], label: str) -> None:
        """Send a reply without waiting: one the peer has no room for is dropped."""
        data = self._encode(reply, label)
        socket = self._socket
        if socket is None:
            return  # closed while the handler ran
        size = len(data)
        is_tracked = size >= _TRACKED_BYTES
        if is_tracked and peer.unread_now() + size > self.max_unread_bytes:
            self._refuse(peer, size, reply["id"])
            return
        try:
            if is_tracked:
                frame = zmq.Frame(data, track=True, copy=False)
                _send_now(socket, [*envelope, frame], copy=False)
                peer.unread.append((frame.tracker, size))
                peer.unread_bytes += size
            else:
                _send_now(socket, [*envelope, data])
        except zmq.Again:
            self._refuse(peer, size, reply["id"])  # ZeroMQ's queue to the peer is full
        except zmq.ZMQError as exc:
            self.stats.errors["send_failed"] += 1
            reason = PEER_GONE if exc.errno == zmq.EHOSTUNREACH else SEND_FAILED
            self._drop_reply(reason, size, reply["id"], str(exc))

    def _refuse(self, peer: _Peer, size: int, request_id: Any) -> None:
        peer.refused_until = self._clock.monotonic() + _REFUSAL_S
        self._drop_reply(UNREAD, size, request_id)

    def _forget_idle_peers(self) -> None:
        now = self._clock.monotonic()
        for identity in [i for i, peer in self._peers.items() if peer.is_idle(now)]:
            del self._peers[identity]

    # -- drops ---------------------------------------------------------------------------

    def _drop(self, reason: str, identity: bytes, body: bytes) -> None:
        """Count (and now and then log) a request dropped without an answer."""
        self.stats.dropped += 1
        self.stats.drops[reason] += 1
        if reason != UNREAD_REPLIES:
            self.stats.malformed += 1
        self._metrics.rpc_requests.labels("", "dropped").inc()
        self._metrics.rpc_requests_dropped.labels(reason).inc()
        left_out = self._throttle.admit(f"request:{reason}")
        if left_out is not None:
            log.warning(
                "dropped an RPC request of %d bytes from peer %s: %s%s",
                len(body),
                identity.hex() or "?",
                _WHY[reason],
                f" ({left_out} more dropped since the last line)" if left_out else "",
                extra={"reason": reason, "peer": identity.hex(), "size": len(body)},
            )

    def _drop_reply(self, reason: str, size: int, request_id: Any, detail: str = "") -> None:
        """Count (and now and then log) a reply not sent as it was."""
        self.stats.reply_drops[reason] += 1
        self._metrics.rpc_replies_dropped.labels(reason).inc()
        left_out = self._throttle.admit(f"reply:{reason}")
        if left_out is not None:
            log.warning(
                "dropped an RPC reply of %d bytes to request %.64r: %s%s",
                size,
                request_id,
                detail or reason,
                f" ({left_out} more since the last line)" if left_out else "",
                extra={"reason": reason, "size": size},
            )
