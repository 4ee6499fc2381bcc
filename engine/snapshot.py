"""Snapshots: an evaluator's whole state as plain values, and back.

Checkpoints store them (msgpack); ``restore_snapshot`` puts one back into an
evaluator of the same automation. Keys added by later versions (Resolved
states, metric triggers) are optional, so older snapshots still restore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from marmot.engine.buckets import Bucket
from marmot.engine.errors import ValidationFailed
from marmot.engine.firing import Firing, TriggerState
from marmot.engine.held import HeldEvent
from marmot.engine.models.events import Event
from marmot.engine.models.triggers import Posture
from marmot.engine.resolution import OpenState

if TYPE_CHECKING:
    from marmot.engine.evaluator import Evaluator

SNAPSHOT_VERSION = 1


def take_snapshot(evaluator: Evaluator) -> dict[str, Any]:
    """An evaluator's state as plain, msgpack-able values."""
    return {
        "v": SNAPSHOT_VERSION,
        "automation": str(evaluator.automation.id),
        "leaves": [
            [[list(key), b.start, b.end, b.count, _dump_last(b.last)] for key, b in leaf.items()]
            for leaf in evaluator.leaves
        ],
        "composites": [
            [[child, _dump_firing(f)] for child, f in sorted(c.recorded.items())]
            for c in evaluator.composites
        ],
        "unresolved": [
            [
                [list(key), o.start, o.end, o.count, _dump_last(o.event), o.due]
                for key, o in leaf.resolutions.items()
            ]
            if leaf.resolutions is not None
            else []
            for leaf in evaluator.leaves
        ],
        "metrics": [monitor.dump() for monitor in evaluator.metrics],
        # SEMANTICS §3.4: per leaf, [key, [[occurred, id, held_at], ...]] per key.
        "held": [
            [
                [list(key), [[h.occurred, str(h.id), h.held_at] for h in events]]
                for key, events in leaf.held.items()
            ]
            if leaf.held is not None
            else []
            for leaf in evaluator.leaves
        ],
    }


def restore_snapshot(evaluator: Evaluator, state: dict[str, Any]) -> None:
    """Replace an evaluator's state with one taken by ``take_snapshot`` of the same
    automation; raises ``ValidationFailed`` if it does not fit."""
    if state.get("v") != SNAPSHOT_VERSION:
        raise ValidationFailed(f"unsupported snapshot version {state.get('v')!r}")
    if state.get("automation") != str(evaluator.automation.id):
        raise ValidationFailed("snapshot belongs to another automation")
    leaves, composites = state["leaves"], state["composites"]
    if len(leaves) != len(evaluator.leaves) or len(composites) != len(evaluator.composites):
        raise ValidationFailed("snapshot does not fit this automation's triggers")
    evaluator.reset()
    for leaf, rows in zip(evaluator.leaves, leaves, strict=True):
        for key, start, end, count, last in rows:
            leaf.load(tuple(key), Bucket(start, end, count, _load_last(last)))
    for composite, rows in zip(evaluator.composites, composites, strict=True):
        composite.recorded = {
            child: _load_firing(data, evaluator.automation.id) for child, data in rows
        }
    # Snapshots from before Resolved states have none; with resolution off
    # (it was turned off since), open states are not kept.
    unresolved = state.get("unresolved") or [[] for _ in evaluator.leaves]
    if len(unresolved) != len(evaluator.leaves):
        raise ValidationFailed("snapshot does not fit this automation's triggers")
    for leaf, rows in zip(evaluator.leaves, unresolved, strict=True):
        if leaf.resolutions is None:
            continue
        for key, start, end, count, event, due in rows:
            last = _load_last(event)
            leaf.resolutions.load(
                tuple(key),
                OpenState(start, end, count, last if isinstance(last, Event) else None, due),
            )
    # Snapshots from before metric triggers have no "metrics": empty state.
    metrics = state.get("metrics")
    if metrics is not None:
        if len(metrics) != len(evaluator.metrics):
            raise ValidationFailed("snapshot does not fit this automation's triggers")
        for monitor, data in zip(evaluator.metrics, metrics, strict=True):
            monitor.load(data)
    # Snapshots from before held events have none.
    held = state.get("held") or [[] for _ in evaluator.leaves]
    if len(held) != len(evaluator.leaves):
        raise ValidationFailed("snapshot does not fit this automation's triggers")
    for leaf, rows in zip(evaluator.leaves, held, strict=True):
        if leaf.held is None:
            continue
        for key, events in rows:
            leaf.held.load(
                tuple(key),
                [HeldEvent(occurred, UUID(event_id), at) for occurred, event_id, at in events],
            )


def _dump_last(last: Event | UUID | None) -> Any:
    if isinstance(last, Event):
        return last.model_dump(mode="json")
    return str(last) if last is not None else None


def _load_last(data: Any) -> Event | UUID | None:
    if data is None:
        return None
    if isinstance(data, dict):
        return Event.model_validate(data)
    return UUID(str(data))


def _dump_firing(firing: Firing) -> dict[str, Any]:
    event = firing.triggering_event
    return {
        "id": str(firing.id),
        "path": firing.trigger_path,
        "labels": dict(firing.labels),
        "event": event.model_dump(mode="json") if event else None,
        "fired_us": firing.fired_us,
        "posture": firing.posture.value if firing.posture else None,
        "children": [str(c) for c in firing.child_ids],
        "deadline_us": firing.deadline_us,
    }


def _load_firing(data: dict[str, Any], automation_id: UUID) -> Firing:
    return Firing(
        id=UUID(data["id"]),
        automation_id=automation_id,
        trigger_path=data["path"],
        labels=data["labels"],
        triggering_event=Event.model_validate(data["event"]) if data["event"] else None,
        fired_us=data["fired_us"],
        posture=Posture(data["posture"]) if data["posture"] else None,
        state=TriggerState.Triggered,
        child_ids=tuple(UUID(c) for c in data["children"]),
        deadline_us=data.get("deadline_us"),
    )
