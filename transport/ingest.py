"""ZeroMQ ingest: a PULL socket (and optional SUB connections) feeding the router.

A frame is one msgpack (or JSON) event or a batch of them. Frames that do
not decode or validate are counted by reason, logged at a limited rate, and
dropped; the loop never dies of input. Frames waiting on the socket are
drained together, so one log transaction carries many of them.

The sockets are plain (not ``zmq.asyncio``) ones: the event loop watches
their file descriptor, and a wake-up drains every waiting frame with
non-blocking reads. Measured at 2,000 one-event frames/s, zmq.asyncio's
future per read (and an exception per empty read) was a quarter of the
daemon's event-loop time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import zmq

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.metrics import Metrics
from marmot.actors.throttle import LogThrottle
from marmot.config import IngestConfig
from marmot.engine.clock import Clock
from marmot.engine.models.events import Event, EventLimits
from marmot.transport.codec import decode_frame
from marmot.transport.curve import CurveServer

log = logging.getLogger(__name__)

Submit = Callable[[Sequence[Event]], Coroutine[Any, Any, object]]
# At most this many frames are drained from the socket into one submit call.
_DRAIN_FRAMES = 256
# Submits in flight at once: the router logs whatever is pending in one
# transaction (group commit) and admits submits in the order they were made.
_SUBMITS_IN_FLIGHT = 4
_POLLIN = int(zmq.POLLIN)
# Frames up to this size are received so that one over ``max_frame_bytes`` is
# counted and logged (as ``too_large``) like any bad frame. Past ZeroMQ's
# MAXMSGSIZE a frame is never delivered: libzmq drops the sender's connection
# and tells the socket nothing (a monitor sees only a disconnect, as when a
# publisher quits). The cap stays because libzmq allocates a frame's announced
# size before reading it.
_RECEIVE_CEILING_BYTES = 64 * 1024 * 1024


def receive_limit(max_frame_bytes: int) -> int:
    """The largest frame ZeroMQ delivers to ingest (its MAXMSGSIZE)."""
    return max(_RECEIVE_CEILING_BYTES, 2 * max_frame_bytes)


class Ingest:
    """Receives event frames and hands validated events to ``submit``."""

    def __init__(
        self,
        config: IngestConfig,
        limits: EventLimits,
        submit: Submit,
        metrics: Metrics,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        curve: CurveServer | None = None,
    ) -> None:
        """``limits`` bound each event; ``curve``: make the PULL socket a CURVE server
        (SUB connections, which reach out to publishers, stay plain)."""
        self.settings = config
        self._limits = limits
        self._submit = submit
        self._metrics = metrics
        self._context = context or zmq.Context.instance()
        self._clock = clock
        self._curve = curve
        self._sockets: list[zmq.Socket[bytes]] = []
        self._drops = LogThrottle()
        self._submitting: deque[asyncio.Task[None]] = deque()
        self.accepted = 0
        self.dropped = 0
        self.bound_endpoint = ""

    def start(self) -> None:
        """Bind the PULL socket and connect the SUB sockets."""
        pull = self._context.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, self.settings.high_water_mark)
        pull.setsockopt(zmq.LINGER, 0)
        limit = receive_limit(self.settings.max_frame_bytes)
        pull.setsockopt(zmq.MAXMSGSIZE, limit)
        if self._curve is not None:
            self._curve.secure(pull)
        pull.bind(self.settings.pull_url)
        self.bound_endpoint = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sockets.append(pull)
        for url in self.settings.sub_urls:
            sub = self._context.socket(zmq.SUB)
            sub.setsockopt(zmq.RCVHWM, self.settings.high_water_mark)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.MAXMSGSIZE, limit)
            sub.setsockopt_string(zmq.SUBSCRIBE, self.settings.sub_topic)
            sub.connect(url)
            self._sockets.append(sub)

    async def run(self) -> None:
        """Receive until cancelled."""
        await asyncio.gather(*(self._receive(s) for s in self._sockets))

    async def _receive(self, socket: zmq.Socket[bytes]) -> None:
        while True:
            frames: list[bytes] = []
            # EVENTS, not a read that fails: an empty read raises, which costs more.
            while (
                len(frames) < _DRAIN_FRAMES and cast(int, socket.getsockopt(zmq.EVENTS)) & _POLLIN
            ):
                frames.append(socket.recv_multipart(zmq.NOBLOCK)[-1])
            if frames:
                await self.handle_frames(frames)
            else:
                await _readable(socket)

    async def handle_frames(self, frames: Sequence[bytes]) -> None:
        """Decode frames (the last part of each message) and submit the events."""
        received = self._clock.now()
        events: list[Event] = []
        for data in frames:
            decoded = decode_frame(
                data,
                limits=self._limits,
                max_frame_bytes=self.settings.max_frame_bytes,
                received=received,
            )
            events.extend(decoded.events)
            for rejection in decoded.rejections:
                self.dropped += 1
                self._metrics.events_dropped.labels(rejection.reason).inc()
                self._warn_dropped(rejection.reason, rejection.message)
        if events:
            self.accepted += len(events)
            # Pipeline: decode the next frames while earlier batches are being
            # logged; submits are admitted in the order they are made, so
            # events keep their order.
            submitting = self._submitting
            while submitting and (len(submitting) >= _SUBMITS_IN_FLIGHT or submitting[0].done()):
                await submitting.popleft()
            submitting.append(asyncio.get_running_loop().create_task(self._submit_safely(events)))

    def _warn_dropped(self, reason: str, message: str) -> None:
        skipped = self._drops.admit(reason)
        if skipped is None:
            return
        more = f" ({skipped} more since last report)" if skipped else ""
        log.warning("dropped input: %s: %s%s", reason, message, more, extra={"reason": reason})

    async def _submit_safely(self, events: list[Event]) -> None:
        try:
            await self._submit(events)
        except Exception as exc:  # the log or router failed: count, report, keep receiving
            self.dropped += len(events)
            self._metrics.events_dropped.labels("submit_failed").inc(len(events))
            log.error("could not accept %d events: %s", len(events), exc, exc_info=True)

    async def flush(self) -> None:
        """Wait for the batch being submitted, if any."""
        while self._submitting:
            await self._submitting.popleft()

    def close(self) -> None:
        """Close the sockets."""
        for socket in self._sockets:
            socket.close(linger=0)
        self._sockets.clear()


async def _readable(socket: zmq.Socket[bytes]) -> None:
    """Return once the loop sees the socket's descriptor signal.

    ZeroMQ's descriptor is edge-triggered and signals any change of the
    socket's state: the caller checks ``EVENTS`` for what is there.
    """
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    fd = cast(int, socket.getsockopt(zmq.FD))

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await woken
    finally:
        loop.remove_reader(fd)
