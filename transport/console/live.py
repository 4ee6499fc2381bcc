"""The console's live updates, as server-sent events.

``/ui/events/live`` streams the feed: the events logged after the last one
the page has, read from the event log by sequence number a batch at a time
(up to 1,000 a read, every quarter second when idle), each batch one SSE
message of compact rows. ``/ui/automations/{id}/live`` tells a detail page
that its automation changed (new events of it, a change of its explain
state), and the page fetches itself again. Streams end when the client goes
or the server stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from marmot.engine.errors import MarmotError
from marmot.transport.console.context import Console
from marmot.transport.console.resource_pages import event_row, feed_filter

__all__ = ["LiveStreams"]

_FEED_BATCH = 1000
_FEED_IDLE_S = 0.25
_DETAIL_EVERY_S = 1.0
# A comment line this often keeps proxies from closing a quiet stream.
_KEEPALIVE_S = 15.0
_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}


def _message(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class LiveStreams:
    """The SSE routes."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        return [
            Route("/events/live", self.feed),
            Route("/automations/{id}/live", self.automation),
        ]

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False once the server is stopping."""
        try:
            await asyncio.wait_for(self.console.stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def _stream(self, chunks: AsyncIterator[bytes]) -> Response:
        return StreamingResponse(chunks, media_type="text/event-stream", headers=_HEADERS)

    async def feed(self, request: Request) -> Response:
        """New events after ``after`` (a sequence number), as they are logged."""
        try:
            after = max(0, int(request.query_params.get("after", "0")))
        except ValueError:
            after = 0
        filters = feed_filter(request)

        async def chunks() -> AsyncIterator[bytes]:
            last = after
            quiet = 0.0
            yield b"retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    found = await self.console.call(
                        "events.filter",
                        {**filters, "after_seq": last, "limit": _FEED_BATCH, "page": True},
                    )
                except MarmotError as exc:
                    yield _message({"error": str(exc)}, "failure")
                    return
                events = found["events"]
                if events:
                    last = max(e["seq"] for e in events)
                    quiet = 0.0
                    yield _message([event_row(e) for e in events])
                    if found.get("next"):
                        continue  # more waiting: read on at once
                elif quiet >= _KEEPALIVE_S:
                    quiet = 0.0
                    yield b": still here\n\n"
                if not await self._pause(_FEED_IDLE_S):
                    return
                quiet += _FEED_IDLE_S

        return self._stream(chunks())

    async def automation(self, request: Request) -> Response:
        """``changed`` whenever the automation's events or explain state change."""
        automation_id = str(UUID(request.path_params["id"]))
        call = self.console.call

        async def fingerprint() -> str:
            explained, newest = await asyncio.gather(
                call("automations.explain", {"id": automation_id, "limit": 100}),
                call(
                    "events.filter",
                    {
                        "resource_id": f"prefect.automation.{automation_id}",
                        "limit": 1,
                        "by_seq": True,
                    },
                ),
            )
            seen = json.dumps([explained, [e["seq"] for e in newest]], sort_keys=True)
            return hashlib.sha256(seen.encode()).hexdigest()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            try:
                known = await fingerprint()
            except MarmotError as exc:
                yield _message({"error": str(exc)}, "failure")
                return
            quiet = 0.0
            while await self._pause(_DETAIL_EVERY_S) and not await request.is_disconnected():
                quiet += _DETAIL_EVERY_S
                try:
                    now = await fingerprint()
                except MarmotError as exc:
                    yield _message({"error": str(exc)}, "failure")
                    return
                if now != known:
                    known = now
                    quiet = 0.0
                    yield _message({"id": automation_id}, "changed")
                elif quiet >= _KEEPALIVE_S:
                    quiet = 0.0
                    yield b": still here\n\n"

        return self._stream(chunks())
