"""Firings: what a trigger reports when it fires, and the event it emits (SEMANTICS §5)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from marmot.engine.models.automations import Automation
from marmot.engine.models.events import (
    RESOURCE_ID,
    RESOURCE_NAME,
    RESOURCE_ROLE,
    Event,
    trusted_event,
)
from marmot.engine.models.triggers import Posture
from marmot.engine.timestamps import from_us, rfc3339

# Firing ids are uuid5 names under this namespace, so the same inputs always
# give the same id (a replayed firing is recognised, not acted on twice).
FIRING_NAMESPACE = UUID("6f1c2a0e-3d4b-5e6f-8a9b-0c1d2e3f4a5b")


class TriggerState(StrEnum):
    """What happened to a trigger: it fired, or (Marmot's extension) it resolved."""

    Triggered = "Triggered"
    Resolved = "Resolved"


@dataclass(frozen=True, slots=True)
class MetricReading:
    """A metric trigger's measure when it fired or resolved: the metric, how it is
    compared, the threshold and the value then (None when no run was measured)."""

    name: str
    operator: str
    threshold: float
    value: float | None

    def as_payload(self) -> dict[str, Any]:
        """The reading as the triggered event's ``payload.metric`` holds it."""
        return {
            "name": self.name,
            "operator": self.operator,
            "threshold": self.threshold,
            "value": self.value,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> MetricReading:
        """The reading ``as_payload`` wrote."""
        return cls(data["name"], data["operator"], data["threshold"], data["value"])


@dataclass(frozen=True, slots=True)
class Firing:
    """A trigger fired: for which labels, on which event, when."""

    id: UUID
    automation_id: UUID
    trigger_path: str
    labels: Mapping[str, str]
    triggering_event: Event | None
    fired_us: int
    posture: Posture | None = None
    state: TriggerState = TriggerState.Triggered
    child_ids: tuple[UUID, ...] = field(default=())
    # A Proactive firing's deadline (its window's end, on the events clock),
    # or a metric firing's (the end of its firing_for): how late it was
    # evaluated is the events clock's time then minus this.
    deadline_us: int | None = None
    # The events-clock time at which it was evaluated (``as_of`` of a proactive
    # evaluation, ``occurred`` of an event): past its deadline by over a second,
    # the evaluation ran late (the daemon or its timer was down).
    evaluated_us: int | None = None
    # A metric trigger's value and threshold when it fired (None for other triggers).
    metric: MetricReading | None = None

    @property
    def fired_at(self) -> datetime:
        """When it fired, on the processing clock (a UTC ``datetime``)."""
        return from_us(self.fired_us)

    @property
    def event_id(self) -> UUID | None:
        """The triggering event's id, or ``None`` for a firing without one."""
        return self.triggering_event.id if self.triggering_event else None


_VERSION_5 = ~(0xF000 << 64) & ~(0xC000 << 48) & ((1 << 128) - 1)
_VERSION_5_BITS = (5 << 76) | (0x8000 << 48)


def name_uuid(namespace: UUID, name: str) -> UUID:
    """``uuid.uuid5(namespace, name)``, the same value, in a third of the time
    (the daemon names every firing and every event a firing emits)."""
    digest = hashlib.sha1(namespace.bytes + name.encode()).digest()
    return UUID(int=(int.from_bytes(digest[:16], "big") & _VERSION_5) | _VERSION_5_BITS)


def firing_id(*parts: object) -> UUID:
    """A deterministic firing id from the facts that identify it."""
    return name_uuid(FIRING_NAMESPACE, "|".join(str(p) for p in parts))


def triggered_event(automation: Automation, firing: Firing) -> Event:
    """The ``prefect.automation.triggered`` (or ``.resolved``) event of a firing."""
    resource = {
        RESOURCE_ID: f"prefect.automation.{automation.id}",
        RESOURCE_NAME: automation.name,
    }
    if firing.posture is not None:
        resource["prefect.posture"] = firing.posture.value
    related: list[dict[str, str]] = []
    source = firing.triggering_event
    if source is not None:
        related.append(
            {RESOURCE_ID: f"prefect.event.{source.id}", RESOURCE_ROLE: "triggering-event"}
        )
    payload: dict[str, Any] = {
        "triggering_labels": dict(firing.labels),
        "triggering_event": source.model_dump(mode="json") if source else None,
    }
    if firing.metric is not None:
        # So a notification can quote what breached: the value and the threshold.
        payload["metric"] = firing.metric.as_payload()
    # Built from values made here, all valid: constructed, not validated again.
    return trusted_event(
        name_uuid(FIRING_NAMESPACE, f"event|{firing.id}"),
        firing.fired_at,
        f"prefect.automation.{firing.state.value.lower()}",
        resource,
        related,
        payload,
    )


def conformance_line(automation_name: str, firing: Firing) -> dict[str, Any]:
    """A firing as one line of ``marmot replay`` output (SEMANTICS §7)."""
    return {
        "automation": automation_name,
        "state": firing.state.value,
        "labels": dict(firing.labels),
        "event_id": str(firing.event_id) if firing.event_id else None,
        "fired_at": rfc3339(firing.fired_at),
    }


def dump_firing(firing: Firing) -> dict[str, Any]:
    """A firing as plain values, for snapshots (a composite's recorded children)."""
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
        "evaluated_us": firing.evaluated_us,
        "metric": firing.metric.as_payload() if firing.metric else None,
    }


def load_firing(data: Mapping[str, Any], automation_id: UUID) -> Firing:
    """The firing ``dump_firing`` wrote, of the automation ``automation_id``."""
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
        deadline_us=data["deadline_us"],
        # Checkpoints written before evaluation times were recorded have none.
        evaluated_us=data.get("evaluated_us"),
        metric=MetricReading.from_payload(data["metric"]) if data.get("metric") else None,
    )
