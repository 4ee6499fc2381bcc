"""What the daemon says of itself: ``/healthz`` and the ``health`` RPC method, and
the RPC table of a daemon that lost its data folder.

Healthy means serving on a store that keeps what it is given. A starting
daemon reports its progress; one whose store refuses writes (a full disk) or
whose data folder is gone reports the reason and the error's code
(``problem``), so an operator and a load balancer see why it is not ok.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from marmot.actors.startup import StartupPhase, StartupProgress
from marmot.engine.errors import StorageFailed, StorageLost
from marmot.transport.api import VERSION
from marmot.transport.starting import starting_health

__all__ = ["STOPPED", "health_report", "lost_handlers"]

STOPPED = "stopped"

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def health_report(
    progress: StartupProgress,
    now: float,
    *,
    fault: StorageFailed | None,
    is_stopped: bool,
    automations: int | None,
) -> dict[str, Any]:
    """The daemon's health: ``ok`` only while serving (``automations`` loaded, None
    while not serving) with no storage ``fault``; else the state (``stopped`` once
    the daemon stopped serving for good), and with a fault its message as
    ``reason`` and its code as ``problem``. ``now`` is monotonic."""
    if is_stopped:
        health: dict[str, Any] = {"ok": False, "state": STOPPED, "version": VERSION}
    elif not progress.is_serving or automations is None:
        health = starting_health(progress, now)
    elif fault is not None:
        health = {"ok": False, "state": StartupPhase.SERVING.value, "version": VERSION}
    else:
        return {
            "ok": True,
            "state": StartupPhase.SERVING.value,
            "version": VERSION,
            "automations": automations,
        }
    if fault is not None:
        health.update(reason=fault.message, problem=fault.code)
    return health


def lost_handlers(lost: StorageLost, methods: Iterable[str], health: Handler) -> dict[str, Handler]:
    """The RPC table once the data folder is lost: ``health`` and ``status`` answer
    with ``health``; every other method of ``methods`` fails with ``lost``."""

    async def refuse(params: dict[str, Any]) -> Any:
        raise lost

    table: dict[str, Handler] = dict.fromkeys(methods, refuse)
    table["health"] = table["status"] = health
    return table
