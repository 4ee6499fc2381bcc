"""The event bridge from a Prefect server: its event stream into Marmot's event log.

The daemon subscribes to ``<api_url>/events/out`` in Prefect's protocol (the
``prefect`` subprotocol, an ``auth`` message, then a ``filter`` message) and
logs every event as ingested ones are, under Prefect's own id, so they are
routed, replayable and in ``events tail``.

Nothing is lost and nothing is logged twice: every (re)connect asks for the
events since the newest ``occurred`` logged (``BridgeCursor``) minus an
overlap, and ids already in the log are dropped and counted. A gap longer than
the socket's backfill is first paged from ``POST /events/filter``. Reconnects
wait a jittered, growing delay, forever; the bridge never stops the daemon.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from marmot.config import PrefectConfig
from marmot.engine.clock import Clock
from marmot.engine.errors import MarmotError
from marmot.engine.models.events import Event, EventLimits
from marmot.transport.prefect_api import PrefectAuth, events_out_url, page_events, time_filter
from marmot.transport.prefect_cursor import BridgeCursor
from marmot.transport.prefect_writeback import WriteBack

__all__ = ["BridgeMetrics", "BridgeState", "PrefectBridge"]

log = logging.getLogger(__name__)

# The live stream's filter must end somewhere; Prefect's own subscriber asks a year ahead.
_STREAM_HORIZON = timedelta(days=365)
# A gap is paged over REST once it comes this close to the socket's backfill bound
# (at most a quarter of it): what the socket would clamp is never asked of it.
_BACKFILL_MARGIN_S = 60.0
# Events handed to the log in one call, at most.
_BATCH_EVENTS = 500
# Socket messages read ahead of the log; the reader waits past it.
_READ_AHEAD = 10_000
# A connection up this long (or that delivered an event) starts the back-off anew.
_STABLE_S = 5.0
# How long the server may take to store an event it received (its event persister
# flushes every 5 s by default): sweeps stay this far behind the live edge.
_SETTLE_S = 10.0
# The resume point is written at most this often while events flow.
_SAVE_INTERVAL_S = 1.0

Emit = Callable[[Sequence[Event]], Awaitable[object]]
KnownIds = Callable[[Sequence[UUID]], Awaitable[set[UUID]]]


class BridgeState(enum.StrEnum):
    """What the bridge is doing."""

    CONNECTING = "connecting"
    CATCHING_UP = "catching_up"  # paging POST /events/filter after a long gap
    CONNECTED = "connected"
    WAITING = "waiting"  # to reconnect, after a failure


class BridgeMetrics:
    """The bridge's Prometheus metrics, on the daemon's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.connected = Gauge(
            "marmot_prefect_bridge_connected",
            "1 while the bridge's socket to the Prefect server is subscribed",
            registry=r,
        )
        self.received = Counter(
            "marmot_prefect_bridge_events_received",
            "Events read from the Prefect server, by how (socket or rest)",
            ["via"],
            registry=r,
        )
        self.duplicates = Counter(
            "marmot_prefect_bridge_duplicates",
            "Events from the Prefect server dropped because their id was already logged",
            registry=r,
        )
        self.refused = Counter(
            "marmot_prefect_bridge_events_refused",
            "Events from the Prefect server that could not be logged, by reason",
            ["reason"],
            registry=r,
        )
        self.reconnects = Counter(
            "marmot_prefect_bridge_reconnects",
            "Connections to the Prefect server lost or refused, by reason",
            ["reason"],
            registry=r,
        )
        self.lag = Gauge(
            "marmot_prefect_bridge_lag_seconds",
            "Now minus the newest occurred logged from the Prefect server",
            registry=r,
        )


class _Refused(Exception):
    """The server ended the handshake: a bad key, a bad filter."""


class PrefectBridge:
    """Subscribes to a Prefect server's events and logs them through ``emit``.

    ``emit`` logs and routes a batch of events (the service's ``emit``);
    ``known_ids`` says which of some event ids are logged already.
    ``run()`` serves until cancelled.
    """

    def __init__(
        self,
        config: PrefectConfig,
        data_dir: Path,
        *,
        emit: Emit,
        known_ids: KnownIds,
        registry: CollectorRegistry,
        clock: Clock,
        writeback: WriteBack | None = None,
        companions: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        assert config.api_url is not None
        self.config = config
        self.api_url = config.api_url.rstrip("/")
        self.auth = PrefectAuth.of(config)
        self.metrics = BridgeMetrics(registry)
        self.cursor = BridgeCursor.load(data_dir, self.api_url)
        self.state = BridgeState.CONNECTING
        self.last_error: str | None = None
        self.reconnects = 0
        self.received = 0
        self.duplicates = 0
        self.refused = 0
        self._emit = emit
        self._known_ids = known_ids
        self.writeback = writeback
        # Run beside the bridge, for as long as it runs (the write-back, the sync).
        self._companions = list(companions)
        # Told of every batch the bridge logged; each must return at once.
        self.watchers: list[Callable[[Sequence[Event]], None]] = []
        self._clock = clock
        self._limits = EventLimits(max_payload_bytes=config.max_event_bytes)
        self._saved_at = 0.0
        # The stream and the sweeper log one batch at a time.
        self._logging = asyncio.Lock()
        self.metrics.lag.set_function(lambda: self.lag_s() or 0.0)

    def lag_s(self) -> float | None:
        """Now minus the newest ``occurred`` logged (None before the first event)."""
        newest = self.cursor.newest
        if newest is None:
            return None
        return max(0.0, (self._clock.now() - newest).total_seconds())

    def status(self) -> dict[str, Any]:
        """The bridge's state for ``marmot status`` and ``/healthz``."""
        lag = self.lag_s()
        newest = self.cursor.newest
        return {
            "api_url": self.api_url,
            "state": self.state.value,
            "lag_s": None if lag is None else round(lag, 3),
            "newest_occurred": None if newest is None else newest.isoformat(),
            "events_received": self.received,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, catch up and stream, reconnecting forever; returns only when cancelled."""
        attempt = 0
        log.info("Prefect event bridge starting", extra={"api_url": self.api_url})
        loop = asyncio.get_running_loop()
        companions = [loop.create_task(run()) for run in self._companions]
        try:
            while True:
                started = self._clock.monotonic()
                before = self.received
                try:
                    await self._session()
                    reason = "closed"
                    self.last_error = "the server closed the stream"
                except _Refused as exc:
                    reason, self.last_error = "refused", str(exc)
                except (OSError, TimeoutError, WebSocketException, httpx.HTTPError) as exc:
                    reason, self.last_error = "connection", _describe(exc)
                except MarmotError as exc:
                    # The log refused a batch (the daemon stopping, a lost store): the
                    # cursor did not move, so the next session asks for it again.
                    reason, self.last_error = "log", f"{exc.code}: {exc.message}"
                self.metrics.connected.set(0)
                self.state = BridgeState.WAITING
                self.reconnects += 1
                self.metrics.reconnects.labels(reason).inc()
                is_stable = self.received > before or (
                    self._clock.monotonic() - started >= _STABLE_S
                )
                attempt = 0 if is_stable else attempt + 1
                delay = self._backoff(attempt)
                log.warning(
                    "Prefect event bridge disconnected (%s); reconnecting in %.1f s",
                    self.last_error,
                    delay,
                    extra={"api_url": self.api_url, "reason": reason},
                )
                await asyncio.sleep(delay)
                self.state = BridgeState.CONNECTING
        finally:
            for task in companions:
                task.cancel()
            await asyncio.gather(*companions, return_exceptions=True)
            self.metrics.connected.set(0)
            self._save()

    def _backoff(self, attempt: int) -> float:
        """Full jitter: a random delay up to ``min(max, min * 2**attempt)``."""
        c = self.config
        ceiling = min(c.reconnect_max_s, c.reconnect_min_s * 2 ** min(attempt, 30))
        return random.uniform(c.reconnect_min_s / 2, max(ceiling, c.reconnect_min_s / 2))

    def _since(self, now: datetime) -> datetime:
        newest = self.cursor.newest
        return (newest or now) - timedelta(seconds=self.config.overlap_s)

    async def _session(self) -> None:
        """One connection: page a long gap over REST, subscribe, then stream while a
        sweeper pages behind the live edge for what the socket missed."""
        c = self.config
        async with httpx.AsyncClient(headers=self.auth.headers(), timeout=c.timeout_s) as http:
            now = self._clock.now()
            since = self._since(now)
            margin_s = min(_BACKFILL_MARGIN_S, c.socket_backfill_s / 4)
            if (now - since).total_seconds() > c.socket_backfill_s - margin_s:
                self.state = BridgeState.CATCHING_UP
                log.info(
                    "Prefect event bridge catching up since %s over REST",
                    since.isoformat(),
                    extra={"api_url": self.api_url},
                )
                await self._page(http, since, now)
                # Everything up to `now` is in; the socket asks again from the overlap.
                since = now - timedelta(seconds=c.overlap_s)
            async with connect(
                events_out_url(self.api_url),
                subprotocols=[Subprotocol("prefect")],
                additional_headers=self.auth.headers(),
                open_timeout=c.timeout_s,
                max_size=c.max_message_bytes,
                max_queue=None,  # the reader below bounds what is read ahead
            ) as socket:
                await self._subscribe(socket, since)
                if self.cursor.newest is None:
                    # The first subscription: what occurred from here on is the
                    # bridge's to log, also across a restart before any event came.
                    self.cursor.advance(since)
                    await asyncio.to_thread(self._save)
                self.state = BridgeState.CONNECTED
                self.metrics.connected.set(1)
                self.last_error = None
                log.info(
                    "Prefect event bridge subscribed since %s",
                    since.isoformat(),
                    extra={"api_url": self.api_url},
                )
                sweeper = asyncio.get_running_loop().create_task(self._sweep(http, since))
                try:
                    await self._stream(socket)
                finally:
                    sweeper.cancel()
                    await asyncio.gather(sweeper, return_exceptions=True)

    async def _page(self, http: httpx.AsyncClient, since: datetime, until: datetime) -> None:
        """Log every event the server stored that occurred from ``since`` to ``until``."""
        window = time_filter(self.config.filter, since, until)
        async for page in page_events(http, self.api_url, window):
            added = await self._log(page, is_sweep=True)
            self.metrics.received.labels("rest").inc(added)

    async def _sweep(self, http: httpx.AsyncClient, since: datetime) -> None:
        """Page what the server stored behind the live edge, for what the socket did not
        deliver: Prefect's stream drops events for a subscriber that falls 256 behind,
        and around a server's start an event can be stored after the socket's
        backfill read and before its stream began. The first sweep, ``_SETTLE_S``
        after subscribing, covers the subscription's start; later ones, every
        ``reconcile_interval_s``, what occurred since (with the overlap)."""
        c = self.config
        frontier = since
        delay_s = _SETTLE_S
        while True:
            await asyncio.sleep(delay_s)
            until = self._clock.now() - timedelta(seconds=_SETTLE_S)
            try:
                await self._page(http, frontier, max(until, frontier))
            except (httpx.HTTPError, MarmotError) as exc:
                # Tried again next time, from the same frontier; the stream goes on.
                self.metrics.refused.labels("sweep_failed").inc()
                log.warning(
                    "the Prefect bridge's sweep failed: %s",
                    _describe(exc),
                    extra={"api_url": self.api_url, "reason": "sweep_failed"},
                )
            else:
                frontier = max(frontier, until - timedelta(seconds=c.overlap_s))
            if c.reconcile_interval_s is None:
                return
            delay_s = c.reconcile_interval_s

    async def _subscribe(self, socket: ClientConnection, since: datetime) -> None:
        """Prefect's handshake: ``auth`` (answered ``auth_success``), then ``filter``."""
        timeout = self.config.timeout_s
        await socket.send(json.dumps({"type": "auth", "token": self.auth.token}))
        try:
            reply = json.loads(await asyncio.wait_for(socket.recv(), timeout))
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            raise _Refused(f"the server refused the auth message: {reason or exc}") from None
        if not isinstance(reply, dict) or reply.get("type") != "auth_success":
            raise _Refused(f"the server refused the auth message: {reply!r:.200}")
        until = self._clock.now() + _STREAM_HORIZON
        message = {
            "type": "filter",
            "filter": time_filter(self.config.filter, since, until),
            "backfill": True,
        }
        await socket.send(json.dumps(message))

    async def _stream(self, socket: ClientConnection) -> None:
        """Read the socket ahead into a queue; log what is queued in batches."""
        queue: asyncio.Queue[str | bytes | BaseException] = asyncio.Queue(_READ_AHEAD)

        async def read() -> None:
            try:
                async for message in socket:
                    await queue.put(message)
                # The server closed: its close frame says why a filter was refused.
                rcvd = socket.close_code, socket.close_reason
                await queue.put(_Refused(f"closed {rcvd[0]}: {rcvd[1]}") if rcvd[1] else EOFError())
            except BaseException as exc:  # handed to the writer, which raises it
                await queue.put(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while True:
                messages = [await queue.get()]
                while len(messages) < _BATCH_EVENTS and not queue.empty():
                    messages.append(queue.get_nowait())
                failure = next((m for m in messages if isinstance(m, BaseException)), None)
                events = [m for m in messages if not isinstance(m, BaseException)]
                documents = [d for d in map(self._document, events) if d is not None]
                self.metrics.received.labels("socket").inc(len(documents))
                await self._log(documents)
                if isinstance(failure, EOFError):
                    return
                if failure is not None:
                    raise failure
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def _document(self, message: str | bytes) -> dict[str, Any] | None:
        """The event of one socket message (``{"type": "event", "event": {...}}``)."""
        try:
            data = json.loads(message)
        except ValueError as exc:
            self._refuse("undecodable", f"a socket message is not JSON: {exc}")
            return None
        if not isinstance(data, dict) or data.get("type") != "event":
            return None  # nothing else is sent today; a newer server's extras are skipped
        event = data.get("event")
        if not isinstance(event, dict):
            self._refuse("not_an_event", "an event message holds no event")
            return None
        return event

    # -- into the log -----------------------------------------------------------------

    async def _log(self, documents: Sequence[dict[str, Any]], *, is_sweep: bool = False) -> int:
        """Validate, drop the ids already logged, log the rest; then move the cursor.
        Returns how many events were new.

        Ids a page of the REST query finds logged are expected (the socket
        delivered them, or the overlap asked again): they are neither counted
        as received nor as duplicates.
        """
        async with self._logging:
            added = await self._log_locked(documents, is_sweep)
        self.received += added if is_sweep else len(documents)
        return added

    async def _log_locked(self, documents: Sequence[dict[str, Any]], is_sweep: bool) -> int:
        received = self._clock.now()
        context = {"limits": self._limits, "received": received}
        events: list[Event] = []
        seen: set[UUID] = set()
        for document in documents:
            try:
                event = Event.model_validate(document, context=context)
            except ValidationError as exc:
                self._refuse("invalid", _validation_text(exc), document.get("id"))
                continue
            if self.writeback is not None and self.writeback.is_own(event.id):
                continue  # Marmot's own event, echoed by the stream: logged already
            if event.id in seen:
                if not is_sweep:
                    self._count_duplicates(1)
                continue
            seen.add(event.id)
            events.append(event)
        if not events:
            return 0
        accepted = list(events)
        known = await self._known_ids([e.id for e in events])
        if known:
            if not is_sweep:
                self._count_duplicates(len(known))
            events = [e for e in events if e.id not in known]
        if events:
            await self._emit(events)
            for watcher in self.watchers:
                watcher(events)
        for event in accepted:
            # Bounded by now: an event stamped in the future (a skewed clock) must
            # not move the resume point past events still to come.
            self.cursor.advance(min(event.occurred, received))
        if self.cursor.is_dirty and self._clock.monotonic() - self._saved_at >= _SAVE_INTERVAL_S:
            self._saved_at = self._clock.monotonic()
            await asyncio.to_thread(self._save)
        return len(events)

    def _count_duplicates(self, count: int) -> None:
        self.duplicates += count
        self.metrics.duplicates.inc(count)

    def _refuse(self, reason: str, message: str, event_id: object = None) -> None:
        """An event that cannot be logged: said in the log and counted, never held."""
        self.refused += 1
        self.metrics.refused.labels(reason).inc()
        log.warning(
            "an event from the Prefect server was not logged: %s",
            message,
            extra={"api_url": self.api_url, "event_id": str(event_id), "reason": reason},
        )

    def _save(self) -> None:
        """Write the resume point; a failure is logged (the next save tries again)."""
        try:
            self.cursor.save()
        except OSError as exc:
            # Not fatal: the next save tries again, and a lost one costs only re-reading.
            log.warning(
                "the Prefect bridge's resume point could not be saved: %s",
                exc,
                extra={"path": str(self.cursor.path)},
            )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _validation_text(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "event"
    return f"{where}: {first['msg']} ({exc.error_count()} problem(s))"
