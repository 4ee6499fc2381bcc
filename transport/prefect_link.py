"""The daemon's link to a Prefect server: its event bridge and write-back, wired.

``open_bridge`` builds the ``PrefectBridge`` for the ``prefect:`` section, its
events logged and routed by the service (held while the store refuses writes,
as ingest's are), and, with ``prefect.write_back``, the ``WriteBack`` that
sends the daemon's own automation events to the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any
from uuid import UUID

from prometheus_client import CollectorRegistry

from marmot.actors.service import Service
from marmot.actors.storage_watch import HeldWrites
from marmot.actors.store import Store
from marmot.config import MarmotConfig
from marmot.engine.clock import Clock
from marmot.engine.errors import MarmotError
from marmot.engine.models.events import Event
from marmot.transport.prefect_api import PrefectAuth
from marmot.transport.prefect_bridge import PrefectBridge
from marmot.transport.prefect_sync import AutomationSync
from marmot.transport.prefect_writeback import WriteBack

__all__ = ["open_bridge", "with_bridge_status"]

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def open_bridge(
    config: MarmotConfig,
    service: Service,
    store: Store,
    *,
    registry: CollectorRegistry,
    clock: Clock,
) -> PrefectBridge:
    """The daemon's bridge for ``config.prefect``: its events logged and routed by
    ``service`` as source ``prefect`` (held while the store refuses writes, as
    ingest's are), duplicates looked up in ``store``'s event log."""
    held = HeldWrites(max_delay_s=1.0)
    writeback: WriteBack | None = None
    if config.prefect.write_back:
        assert config.prefect.api_url is not None
        writeback = WriteBack(
            config.prefect.api_url,
            PrefectAuth.of(config.prefect),
            _posture_lookup(store),
            registry=registry,
            clock=clock,
            timeout_s=config.prefect.timeout_s,
        )
        service.own_event_watchers.append(writeback.offer)

    async def emit(events: Sequence[Event]) -> object:
        return await held(lambda: service.emit(events, source="prefect"))

    async def known_ids(ids: Sequence[UUID]) -> set[UUID]:
        return await asyncio.to_thread(store.events.known_ids, ids)

    companions: list[Callable[[], Coroutine[Any, Any, None]]] = []
    if writeback is not None:
        companions.append(writeback.run)
    sync = None
    if config.prefect.sync_automations:
        sync = AutomationSync(config.prefect, service, registry=registry)
        companions.append(sync.run)
    bridge = PrefectBridge(
        config.prefect,
        config.data.dir,
        emit=emit,
        known_ids=known_ids,
        registry=registry,
        clock=clock,
        writeback=writeback,
        companions=companions,
    )
    if sync is not None:
        bridge.watchers.append(sync.watch)
    return bridge


def _posture_lookup(store: Store) -> Callable[[str], str | None]:
    """``posture_of`` for the write-back: an automation's trigger posture, from the
    store, remembered (a trigger's posture is fixed once written)."""
    known: dict[str, str | None] = {}

    def posture_of(automation_id: str) -> str | None:
        if automation_id not in known:
            try:
                trigger = store.automations.read(UUID(automation_id)).automation.trigger
            except (ValueError, MarmotError):
                return None
            posture = getattr(trigger, "posture", None)
            known[automation_id] = None if posture is None else str(posture.value)
        return known[automation_id]

    return posture_of


def with_bridge_status(status: Handler, bridge: PrefectBridge) -> Handler:
    """The ``status`` RPC handler with the bridge's state added as ``prefect_bridge``."""

    async def handler(params: dict[str, Any]) -> Any:
        reply = await status(params)
        if isinstance(reply, dict):
            reply = {**reply, "prefect_bridge": bridge.status()}
        return reply

    return handler
