"""Which object an action acts on: named in the action, or inferred from the event.

An ``inferred`` action looks for a resource id ``prefect.<kind>.<uuid>`` first
on the event's primary resource, then on its related resources in order. When
none is there, or the id is not a UUID, the action fails with the reason; it
is never silently skipped.
"""

from __future__ import annotations

from uuid import UUID

from marmot.engine.models.actions import (
    Action,
    AutomationAction,
    ChangeFlowRunState,
    DeploymentAction,
    FlowRunAction,
    TargetedAction,
    WorkPoolAction,
    WorkQueueAction,
)
from marmot.engine.models.events import RESOURCE_ID, Event

__all__ = ["TargetNotFound", "infer_target", "resolve_target", "target_kind"]


class TargetNotFound(ValueError):
    """The action's target could not be worked out from the event."""


_KINDS: tuple[tuple[type[Action], str], ...] = (
    (FlowRunAction, "flow-run"),
    (ChangeFlowRunState, "flow-run"),
    (DeploymentAction, "deployment"),
    (WorkPoolAction, "work-pool"),
    (WorkQueueAction, "work-queue"),
    (AutomationAction, "automation"),
)


def target_kind(action: Action) -> str | None:
    """The kind of object the action is aimed at (``flow-run``, ``deployment``...)."""
    for cls, kind in _KINDS:
        if isinstance(action, cls):
            return kind
    return None


def infer_target(kind: str, event: Event | None) -> UUID:
    """The id of the first ``prefect.<kind>.<id>`` resource of the event."""
    if event is None:
        raise TargetNotFound(f"no triggering event to infer the {kind} from")
    prefix = f"prefect.{kind}."
    for labels in (event.resource, *event.related):
        resource_id = labels.get(RESOURCE_ID, "")
        if resource_id.startswith(prefix):
            text = resource_id[len(prefix) :]
            try:
                return UUID(text)
            except ValueError:
                raise TargetNotFound(
                    f"resource {resource_id!r} does not end in a {kind} id (a UUID)"
                ) from None
    raise TargetNotFound(
        f"event {event.event!r} ({event.id}) concerns no {kind}: neither its resource nor "
        f"a related resource has an id starting with {prefix!r}"
    )


def resolve_target(action: Action, event: Event | None) -> UUID:
    """The id the action acts on: the selected one, or the one inferred from the event."""
    kind = target_kind(action)
    if kind is None:
        raise TargetNotFound(f"{action.type} has no target")
    if isinstance(action, TargetedAction) and action.source == "selected":
        selected = getattr(action, action.target_field)
        if isinstance(selected, UUID):
            return selected
    return infer_target(kind, event)
