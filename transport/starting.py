"""The daemon's answers while it starts: its state and progress, and "not yet".

Until the service is ready the RPC server serves ``StartingApi``: ``health``
and ``status`` reply with the start-up phase and how many automations are
recovered, and every other method fails at once with ``DaemonUnavailable``,
so nothing changes state before recovery is done. ``/healthz`` shows the
same view with a 503.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.startup import StartupProgress
from marmot.engine.clock import Clock
from marmot.engine.errors import DaemonUnavailable
from marmot.transport.api import VERSION, Handler

STARTING = "starting"


class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def progress_view(progress: StartupProgress, now: float) -> dict[str, Any]:
    """A starting daemon's state as clients see it (``now`` in monotonic seconds)."""
    return {
        "state": STARTING,
        "phase": progress.phase.value,
        "automations_recovered": progress.automations_recovered,
        "automations_total": progress.automations_total,
        "elapsed_s": round(progress.elapsed_s(now), 3),
    }


def starting_health(progress: StartupProgress, now: float) -> dict[str, Any]:
    """``health`` (and ``/healthz``) of a starting daemon: not ok, with the progress."""
    return {"ok": False, "version": VERSION, **progress_view(progress, now)}


def starting_error(progress: StartupProgress, now: float) -> DaemonUnavailable:
    """The error every state-changing or reading method gets while the daemon starts."""
    return DaemonUnavailable(
        f"the daemon is starting: {progress.describe()}", details=progress_view(progress, now)
    )


class StartingApi:
    """The RPC methods of a daemon that is still starting.

    ``methods`` are the names of the full API: each of them (but ``health``
    and ``status``) answers ``DaemonUnavailable``; other names stay unknown.
    ``clock`` times the start-up (its monotonic seconds).
    """

    def __init__(
        self, progress: StartupProgress, methods: Iterable[str], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.progress = progress
        self.methods = tuple(methods)
        self._now = clock.monotonic

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler, for the RPC server."""
        table: dict[str, Handler] = dict.fromkeys(self.methods, self.unavailable)
        table["health"] = self.health
        table["status"] = self.status
        return table

    async def health(self, params: dict[str, Any]) -> dict[str, Any]:
        """``ok`` false, the state, the version and the progress."""
        _NoParams.model_validate(params)
        return starting_health(self.progress, self._now())

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        """The version, the state and the progress."""
        _NoParams.model_validate(params)
        return {"version": VERSION, **progress_view(self.progress, self._now())}

    async def unavailable(self, params: dict[str, Any]) -> Any:
        """Refuse: the daemon is starting (raises ``DaemonUnavailable``)."""
        raise starting_error(self.progress, self._now())
