"""``Publisher``: events to the daemon's ingest socket over ZeroMQ PUSH, unacknowledged."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import zmq

from marmot.config import DEFAULT_INGEST_URL
from marmot.engine.models.events import Event
from marmot.transport.codec import events_frame
from marmot.transport.curve import client_curve

__all__ = ["Publisher"]


class Publisher:
    """Sends events to the daemon's ingest socket over ZeroMQ PUSH, in batches.

    Fire and forget (use ``Client.emit`` for acknowledged delivery): events are
    buffered and sent as one frame when ``batch_size`` is reached, on
    ``flush()``, and on close.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        batch_size: int = 100,
        server_key: str | None = None,
        client_key: str | None = None,
    ) -> None:
        """``server_key``/``client_key``: CURVE, as for ``Client``."""
        self.url = url or os.environ.get("MARMOT_INGEST_URL") or DEFAULT_INGEST_URL
        self.batch_size = batch_size
        curve = client_curve(server_key, client_key)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 5000)
        if curve is not None:
            curve.secure(self._socket)
        self._socket.connect(self.url)
        self._buffer: list[Event] = []
        self.sent = 0

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def publish(self, event: Event | Mapping[str, Any]) -> None:
        """Queue one event (a model or a Prefect-shaped dict; validated here)."""
        self._buffer.append(event if isinstance(event, Event) else Event.model_validate(event))
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Send the buffered events as one frame."""
        if self._buffer:
            self._socket.send(events_frame(self._buffer))
            self.sent += len(self._buffer)
            self._buffer.clear()

    def close(self) -> None:
        """Flush and close the socket (waiting up to 5 s for delivery)."""
        self.flush()
        self._socket.close()
