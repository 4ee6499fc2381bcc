"""What an action runner is given and what it may report: the executor's contract.

The executor (``actors/executor.py``) claims each action in the action log,
then calls the runner for its type with an :class:`ActionRun`. A runner is an
async callable; it returns an :class:`ActionResult` or raises
:class:`ActionFailed` (give up, with the reason) or :class:`TransientFailure`
(try again after a backoff, up to ``executors.max_retries`` times).

Runners live in ``transport/actions/`` (they do network I/O); the daemon
hands the executor a picklable factory that builds them inside the executor
actor, so this layer never imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from marmot.config import MarmotConfig
from marmot.engine.models.actions import Action
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.triggers.firing import Firing

if TYPE_CHECKING:
    from marmot.actors.store import Store

__all__ = [
    "ActionFailed",
    "ActionResult",
    "ActionRun",
    "RegistryRequest",
    "Runner",
    "RunnerFactory",
    "RunnerSet",
    "TransientFailure",
]


@dataclass(frozen=True, slots=True)
class ActionRun:
    """One action of one firing, as the runner sees it."""

    action: Action
    automation: Automation
    firing: Firing
    # The event templates render from and targets are inferred from: the
    # triggering event for ``actions``, the automation.triggered event for
    # ``actions_on_trigger`` (SEMANTICS §5). None for a firing without one.
    event: Event | None
    index: int
    key: str
    attempt: int = 1


RegistryOp = Literal["pause", "resume"]


@dataclass(frozen=True, slots=True)
class RegistryRequest:
    """A change to Marmot's own automation registry, applied by the daemon."""

    op: RegistryOp
    automation_id: str


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What a runner did: a short human detail, and any registry change to apply."""

    detail: str
    registry: RegistryRequest | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


class ActionFailed(Exception):
    """The action could not be carried out; do not try again."""


class TransientFailure(ActionFailed):
    """The action failed in a way that may pass (connect error, 5xx, 429): retry."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


Runner = Callable[[ActionRun], Awaitable[ActionResult]]


async def _nothing_to_close() -> None:
    return None


@dataclass(frozen=True, slots=True)
class RunnerSet:
    """The runners an executor uses, by action type, and how to release them."""

    runners: Mapping[str, Runner]
    close: Callable[[], Awaitable[None]] = _nothing_to_close


# Built inside the executor actor from the daemon's config and the executor's
# own store connection (action log, blocks, incidents, automations).
RunnerFactory = Callable[[MarmotConfig, "Store"], Awaitable[RunnerSet]]
