"""What Marmot's automations do, sent to the Prefect server its events come from.

With ``prefect.write_back`` the daemon's own ``prefect.automation.triggered``,
``.resolved`` and ``prefect.automation.action.*`` events go to the server's
``POST /events`` in Prefect's shape (the ``prefect.posture`` label on the
automation, ``follows`` chaining an action's events as Prefect chains them),
so Prefect's event feed shows them. Their ids are kept; the bridge skips them
when the server's stream brings them back (``is_own``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import httpx
from prometheus_client import CollectorRegistry, Counter

from marmot.engine.clock import Clock
from marmot.engine.models.events import RESOURCE_ID, RESOURCE_ROLE, Event, dump_event
from marmot.engine.triggers.firing import FIRING_NAMESPACE, name_uuid
from marmot.transport.prefect_api import PrefectAuth

__all__ = ["WriteBack", "is_written_back"]

log = logging.getLogger(__name__)

_PREFIX = "prefect.automation."
# Events waiting to be sent, at most; past it the oldest are dropped (counted).
_MAX_QUEUED = 10_000
# Events per POST /events.
_BATCH = 200
# Ids sent, remembered so the bridge can skip them when the stream echoes them.
_REMEMBERED = 50_000
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 30.0

PostureOf = Callable[[str], str | None]


def is_written_back(name: str) -> bool:
    """Whether an event of this name is one the write-back sends."""
    return name.startswith(_PREFIX)


class WriteBack:
    """Queues the daemon's own automation events and sends them to the server.

    ``posture_of(automation_id)`` says an automation's trigger posture (None
    when it has none, as composite triggers). ``offer`` never waits; ``run``
    sends until cancelled, retrying a refused or failed batch with back-off.
    """

    def __init__(
        self,
        api_url: str,
        auth: PrefectAuth,
        posture_of: PostureOf,
        *,
        registry: CollectorRegistry,
        clock: Clock,
        timeout_s: float = 30.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._auth = auth
        self._posture_of = posture_of
        self._clock = clock
        self._timeout_s = timeout_s
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._sent_ids: OrderedDict[UUID, None] = OrderedDict()
        self.sent = Counter(
            "marmot_prefect_writeback_events_sent",
            "Marmot's automation events sent to the Prefect server",
            registry=registry,
        )
        self.failures = Counter(
            "marmot_prefect_writeback_failures",
            "Batches the Prefect server did not take (sent again), or events dropped, by reason",
            ["reason"],
            registry=registry,
        )

    def offer(self, events: Sequence[Event]) -> None:
        """Queue the automation events among ``events`` (a ``Service`` watcher)."""
        for event in events:
            if not is_written_back(event.event):
                continue
            if len(self._queue) >= _MAX_QUEUED:
                self._queue.popleft()
                self.failures.labels("queue_full").inc()
            self._queue.append(event)
            self._remember(event.id)
        if self._queue:
            self._ready.set()

    def is_own(self, event_id: UUID) -> bool:
        """Whether this event was sent by this write-back (the stream echoes it)."""
        return event_id in self._sent_ids

    def _remember(self, event_id: UUID) -> None:
        self._sent_ids[event_id] = None
        while len(self._sent_ids) > _REMEMBERED:
            self._sent_ids.popitem(last=False)

    async def run(self) -> None:
        """Send what is queued, in order, until cancelled."""
        delay_s = _RETRY_MIN_S
        async with httpx.AsyncClient(headers=self._auth.headers(), timeout=self._timeout_s) as http:
            while True:
                await self._ready.wait()
                batch = [self._queue[i] for i in range(min(_BATCH, len(self._queue)))]
                if not batch:
                    self._ready.clear()
                    continue
                try:
                    response = await http.post(
                        self.api_url + "/events", json=[self._shape(e) for e in batch]
                    )
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    reason = "refused" if isinstance(exc, httpx.HTTPStatusError) else "connection"
                    self.failures.labels(reason).inc()
                    log.warning(
                        "sending %d automation event(s) to the Prefect server failed (%s); "
                        "trying again in %.1f s",
                        len(batch),
                        exc,
                        delay_s,
                        extra={"api_url": self.api_url, "reason": reason},
                    )
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, _RETRY_MAX_S)
                    continue
                delay_s = _RETRY_MIN_S
                for _ in batch:
                    if self._queue:
                        self._queue.popleft()
                self.sent.inc(len(batch))

    def _shape(self, event: Event) -> dict[str, Any]:
        """The event as Prefect's own automations write it."""
        document = dump_event(event)
        assert document is not None
        document.pop("received", None)  # the server stamps its own
        resource: dict[str, str] = dict(document["resource"])
        automation_id = resource.get(RESOURCE_ID, "").removeprefix(_PREFIX)
        if "prefect.posture" not in resource:
            posture = self._posture_of(automation_id)
            if posture is not None:
                resource["prefect.posture"] = posture
        document["resource"] = resource
        if event.follows is None and event.event.startswith(_PREFIX + "action."):
            follows = _action_follows(event)
            if follows is not None:
                document["follows"] = str(follows)
        return document


def _action_follows(event: Event) -> UUID | None:
    """The chain of an action's events: ``action.triggered`` follows the firing's
    ``automation.triggered`` event, ``executed``/``failed`` follow the action's
    ``action.triggered`` (whose id Marmot derives from the firing and the action's
    index). Both leaders are sent first, so Prefect never holds a follower back
    waiting for one (as it would for a triggering event it never saw)."""
    if event.event.endswith(".triggered"):
        for related in event.related:
            if related.get(RESOURCE_ROLE) == "automation-triggered-event":
                return UUID(related[RESOURCE_ID].removeprefix("prefect.event."))
        return None
    payload = event.payload
    invocation, index = payload.get("invocation"), payload.get("action_index")
    if invocation is None or index is None:
        return None
    return name_uuid(FIRING_NAMESPACE, f"action|{invocation}|{index}|triggered")
