"""``prefect.sync_automations``: the Prefect server's automations kept imported while
the daemon runs.

What ``marmot automation import --from-prefect --pause-source`` does once, done
every ``prefect.sync_interval_s`` and whenever a ``prefect.deployment.*`` event
comes through the bridge (``prefect deploy`` or ``.serve(triggers=...)``
recreating a deployment's automations): new or changed automations are
created or updated in Marmot under their ids, then disabled on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import httpx
from prometheus_client import CollectorRegistry, Counter

from marmot.actors.service import Service
from marmot.config import PrefectConfig
from marmot.engine.errors import MarmotError
from marmot.engine.models.events import Event
from marmot.transport.prefect_api import PrefectAuth
from marmot.transport.prefect_automations import (
    ImportOutcome,
    ImportStep,
    pause_prefect_automation,
    plan_import,
    read_prefect_automations,
)

__all__ = ["AutomationSync"]

log = logging.getLogger(__name__)

_NUDGING = "prefect.deployment."


class AutomationSync:
    """Imports the server's automations into ``service`` and pauses them there."""

    def __init__(
        self, config: PrefectConfig, service: Service, *, registry: CollectorRegistry
    ) -> None:
        assert config.api_url is not None
        self.api_url = config.api_url.rstrip("/")
        self._config = config
        self._auth = PrefectAuth.of(config)
        self._service = service
        self._nudged = asyncio.Event()
        self.synced = Counter(
            "marmot_prefect_sync_automations",
            "Automations of the Prefect server synced into Marmot, by outcome",
            ["outcome"],
            registry=registry,
        )

    def watch(self, events: Sequence[Event]) -> None:
        """Sync soon when a deployment changed on the server (a bridge watcher)."""
        if any(e.event.startswith(_NUDGING) for e in events):
            self._nudged.set()

    async def run(self) -> None:
        """Sync now, then on every nudge or interval, until cancelled; a failed sync
        is logged and counted, and tried again next time."""
        while True:
            try:
                await self.sync_once()
            except (httpx.HTTPError, MarmotError) as exc:
                self.synced.labels("failed").inc()
                log.warning(
                    "syncing the Prefect server's automations failed: %s",
                    exc,
                    extra={"api_url": self.api_url},
                )
            self._nudged.clear()
            with contextlib.suppress(TimeoutError):  # the interval is up: sync anyway
                await asyncio.wait_for(self._nudged.wait(), self._config.sync_interval_s)

    async def sync_once(self) -> list[ImportStep]:
        """One import with ``--pause-source``; returns what it did."""
        async with httpx.AsyncClient(
            headers=self._auth.headers(), timeout=self._config.timeout_s
        ) as http:
            source = await read_prefect_automations(http, self.api_url)
            # Only enabled ones: a disabled source is one already moved (or paused by
            # its owner); Marmot's copy keeps its own state.
            enabled = [d for d in source if isinstance(d, dict) and d.get("enabled", True)]
            existing = [s.automation for s in self._service.store.automations.list()]
            steps = plan_import(enabled, existing, adopt_by_name=True)
            for step in steps:
                automation = step.automation
                if automation is None or step.outcome is ImportOutcome.UNCHANGED:
                    if step.outcome is ImportOutcome.REFUSED:
                        log.warning(
                            "automation %s (%s) of the Prefect server not synced: %s: %s",
                            step.name,
                            step.id,
                            step.field,
                            step.reason,
                            extra={"automation": step.id},
                        )
                else:
                    if step.outcome is ImportOutcome.CREATED:
                        await self._service.create(automation)
                    else:
                        await self._service.update(automation)
                self.synced.labels(step.outcome.value).inc()
                if step.outcome is not ImportOutcome.REFUSED:
                    await pause_prefect_automation(http, self.api_url, step.id)
        changed = [s for s in steps if s.outcome is not ImportOutcome.UNCHANGED]
        if changed:
            log.info(
                "synced %d automation(s) of the Prefect server",
                len(changed),
                extra={"api_url": self.api_url},
            )
        return steps
