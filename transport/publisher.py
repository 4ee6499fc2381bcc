"""``Publisher``: events to the daemon's ingest socket over ZeroMQ PUSH, sent at once."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import zmq

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.config import DEFAULT_INGEST_URL
from marmot.engine.clock import Clock
from marmot.engine.models.events import Event
from marmot.transport.codec import events_frame
from marmot.transport.curve import client_curve
from marmot.transport.event_ids import new_event_id

__all__ = ["Publisher"]


class Publisher:
    """Sends events to the daemon's ingest socket over ZeroMQ PUSH, unacknowledged.

    Fire and forget (use ``Client.emit`` for acknowledged delivery). An event
    is sent at once when the publisher is idle: nothing waits for company, so
    a lone event reaches the daemon in a millisecond, which is what "this did
    not happen in time" (proactive) triggers need. A sender thread sends one
    frame at a time; what is published while a frame is being sent goes in the
    next one (at most ``batch_size`` events a frame), so bursts still travel in
    few frames. ``flush()`` waits until everything published has been handed
    to ZeroMQ; ``close()`` flushes, then waits up to ``linger_s`` for delivery.

    An event without ``id`` or ``occurred`` gets them here (a new id, the time
    it was published), as Prefect's clients do.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        batch_size: int = 100,
        server_key: str | None = None,
        client_key: str | None = None,
        linger_s: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``server_key``/``client_key``: CURVE, as for ``Client``."""
        self.url = url or os.environ.get("MARMOT_INGEST_URL") or DEFAULT_INGEST_URL
        self.batch_size = batch_size
        self._clock = clock
        curve = client_curve(server_key, client_key)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, round(linger_s * 1000))
        if curve is not None:
            curve.secure(self._socket)
        self._socket.connect(self.url)
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()
        self._sending = False
        self._closed = False
        self._error: BaseException | None = None
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="marmot-publisher", daemon=True)
        self._thread.start()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def publish(self, event: Event | Mapping[str, Any]) -> None:
        """Send one event (a model or a Prefect-shaped dict; validated here) as soon as
        the sender is free."""
        checked = event if isinstance(event, Event) else self._validated(event)
        with self._cond:
            if self._closed:
                raise RuntimeError("the publisher is closed")
            self._queue.append(checked)
            self._cond.notify_all()

    def _validated(self, document: Mapping[str, Any]) -> Event:
        fields = dict(document)
        fields.setdefault("id", new_event_id())
        fields.setdefault("occurred", self._clock.now())
        return Event.model_validate(fields)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed, nothing left
                size = min(len(self._queue), self.batch_size)
                batch = [self._queue.popleft() for _ in range(size)]
                self._sending = True
            try:
                self._socket.send(events_frame(batch))
            except Exception as exc:  # kept for flush()/close() to raise
                self._error = exc
            with self._cond:
                self._sending = False
                self.sent += len(batch)
                self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every event published so far has been handed to ZeroMQ."""
        with self._cond:
            self._cond.wait_for(lambda: not self._queue and not self._sending, timeout_s)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Flush, stop the sender and close the socket (waiting up to ``linger_s`` for
        delivery)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._socket.close()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
