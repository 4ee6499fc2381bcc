"""The body of an action-executor actor: carries out a firing's actions, once.

Each action gets an idempotency key (firing id + action index) that is
claimed in the action log before it runs, so a firing delivered twice acts
once. Every action reports ``prefect.automation.action.triggered`` and then
``.executed`` or ``.failed`` events, which the daemon feeds back into the
event stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid5

from marmot.actors.wire import event_from_wire, event_to_wire, firing_from_wire, pack, unpack
from marmot.engine.firing import FIRING_NAMESPACE, Firing
from marmot.engine.models.actions import Action
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event

log = logging.getLogger(__name__)


class ActionLog(Protocol):
    """The part of the store executors need."""

    def claim_actions(self, claims: Sequence[tuple[str, str, str, int]]) -> set[str]: ...

    def finish_actions(self, results: Sequence[tuple[str, str, str]]) -> None: ...


class ActionFailed(Exception):
    """Raised by an action runner when the action could not be carried out."""


# An action runner does the work of one action type; it raises ActionFailed.
Runner = Callable[[Action, Automation, Firing, Event | None], str]


def run_do_nothing(
    action: Action, automation: Automation, firing: Firing, event: Event | None
) -> str:
    """``do-nothing``: succeeds without side effects."""
    return "did nothing, as asked"


class ExecutorHost:
    """Runs the actions of firings against the action log."""

    def __init__(
        self,
        log_factory: Callable[[], ActionLog],
        runners: dict[str, Runner] | None = None,
    ) -> None:
        self._log = log_factory()
        self._runners: dict[str, Runner] = {"do-nothing": run_do_nothing, **(runners or {})}

    def ping(self) -> bool:
        """Liveness check."""
        return True

    def execute(self, blob: bytes) -> bytes:
        """Run the actions of a batch of firings; returns packed action events (wire rows).

        The blob is ``[{automation id: automation JSON}, [[automation id, firing,
        automation.triggered event], ...]]``. Every action is claimed in the
        action log before it runs (one transaction for the batch), so a firing
        delivered twice acts once.
        """
        documents, jobs = unpack(blob)
        automations = {a: Automation.model_validate_json(doc) for a, doc in documents.items()}
        planned: list[tuple[str, Automation, Firing, Event, int, Action, Event | None]] = []
        for automation_id, firing_row, triggered_row in jobs:
            automation = automations[automation_id]
            firing = firing_from_wire(firing_row)
            triggered = event_from_wire(triggered_row)
            plan: list[tuple[Action, Event | None]] = [
                (action, firing.triggering_event) for action in automation.actions
            ]
            # SEMANTICS §5: actions_on_trigger see the automation.triggered event.
            plan += [(action, triggered) for action in automation.actions_on_trigger]
            for index, (action, source) in enumerate(plan):
                key = firing_key(firing.id, index)
                planned.append((key, automation, firing, triggered, index, action, source))
        claimed = self._log.claim_actions(
            [(p[0], str(p[2].id), str(p[1].id), p[4]) for p in planned]
        )
        emitted: list[Event] = []
        results: list[tuple[str, str, str]] = []
        for key, automation, firing, triggered, index, action, source in planned:
            if key not in claimed:
                continue  # delivered before: act once
            emitted.append(_action_event("triggered", automation, firing, action, index, triggered))
            status, detail = self._run(action, automation, firing, source)
            results.append((key, status, detail))
            emitted.append(
                _action_event(status, automation, firing, action, index, triggered, detail)
            )
        self._log.finish_actions(results)
        return pack([event_to_wire(e) for e in emitted])

    def _run(
        self, action: Action, automation: Automation, firing: Firing, source: Event | None
    ) -> tuple[str, str]:
        runner = self._runners.get(action.type)
        if runner is None:
            return "failed", f"action type {action.type!r} cannot run: no runner is configured"
        try:
            return "executed", runner(action, automation, firing, source)
        except ActionFailed as exc:
            return "failed", str(exc)
        except Exception as exc:  # an action's bug must not kill the executor
            log.exception(
                "action crashed",
                extra={"automation": str(automation.id), "action_type": action.type},
            )
            return "failed", f"{type(exc).__name__}: {exc}"


def _action_event(
    status: str,
    automation: Automation,
    firing: Firing,
    action: Action,
    index: int,
    triggered: Event,
    detail: str = "",
) -> Event:
    payload: dict[str, Any] = {
        "action_index": index,
        "action_type": action.type,
        "invocation": str(firing.id),
    }
    if status == "failed":
        payload["reason"] = detail
    elif detail:
        payload["result"] = detail
    related = [
        {RESOURCE_ID: f"prefect.event.{triggered.id}", RESOURCE_ROLE: "automation-triggered-event"}
    ]
    if firing.triggering_event is not None:
        related.append(
            {
                RESOURCE_ID: f"prefect.event.{firing.triggering_event.id}",
                RESOURCE_ROLE: "triggering-event",
            }
        )
    return Event(
        id=uuid5(FIRING_NAMESPACE, f"action|{firing.id}|{index}|{status}"),
        occurred=datetime.now(UTC),
        event=f"prefect.automation.action.{status}",
        resource={
            RESOURCE_ID: f"prefect.automation.{automation.id}",
            RESOURCE_NAME: automation.name,
            "prefect.trigger-type": automation.trigger.type,
        },
        related=related,
        payload=payload,
    )


def action_events_from_blob(blob: bytes) -> list[Event]:
    """The events an ``execute`` call returned."""
    return [event_from_wire(row) for row in unpack(blob)]


def firing_key(firing_id: UUID, index: int) -> str:
    """The idempotency key of one action of one firing."""
    return f"{firing_id}:{index}"
