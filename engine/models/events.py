"""Events in Prefect's shape, validated once at the edge (SEMANTICS §1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from marmot.engine.models._base import MarmotModel

RESOURCE_ID = "prefect.resource.id"
RESOURCE_ROLE = "prefect.resource.role"
RESOURCE_NAME = "prefect.resource.name"

# Prefect's defaults; override per validation with context={"limits": EventLimits(...)}.
DEFAULT_MAX_LABELS = 500
DEFAULT_MAX_RELATED = 500
MAX_EVENT_NAME = 1024


class EventLimits(MarmotModel):
    """Size limits applied when an event is validated."""

    max_labels: int = DEFAULT_MAX_LABELS
    max_related: int = DEFAULT_MAX_RELATED


_DEFAULT_LIMITS = EventLimits()


def _limits(info: ValidationInfo) -> EventLimits:
    context = info.context
    if isinstance(context, dict):
        limits = context.get("limits")
        if isinstance(limits, EventLimits):
            return limits
    return _DEFAULT_LIMITS


def _stamp(info: ValidationInfo) -> datetime | None:
    """The ``received`` time the validating edge (ingest) stamps, if any."""
    context = info.context
    if isinstance(context, dict):
        received = context.get("received")
        if isinstance(received, datetime):
            return received
    return None


def _as_utc(value: datetime) -> datetime:
    # Prefect treats a naive timestamp as UTC; everything is normalised to UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


def _check_labels(labels: dict[str, str], where: str, limits: EventLimits) -> None:
    if len(labels) > limits.max_labels:
        raise ValueError(
            f"{where} has {len(labels)} labels; at most {limits.max_labels} are allowed"
        )
    if not labels.get(RESOURCE_ID):
        raise ValueError(f"{where} must have a non-empty '{RESOURCE_ID}' label")


class Event(MarmotModel):
    """One event: something that happened to a resource, at a time.

    Validate with ``context={"limits": EventLimits(...), "received": now}`` to
    apply other limits and stamp the time of acceptance.
    """

    model_config = MarmotModel.model_config | {"frozen": True}

    id: UUID = Field(default_factory=uuid4)
    occurred: datetime
    event: str = Field(min_length=1, max_length=MAX_EVENT_NAME)
    resource: dict[str, str]
    related: list[dict[str, str]] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)
    follows: UUID | None = None
    received: datetime | None = None

    # One after-validator for every check: a Python call per field would
    # double validation time on the ingest hot path (bench/engine.py).
    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Event:
        limits = _limits(info)
        _check_labels(self.resource, "resource", limits)
        related = self.related
        if related:
            if len(related) > limits.max_related:
                raise ValueError(
                    f"{len(related)} related resources; at most {limits.max_related} are allowed"
                )
            for index, labels in enumerate(related):
                _check_labels(labels, f"related[{index}]", limits)
                if not labels.get(RESOURCE_ROLE):
                    raise ValueError(f"related[{index}] must have a '{RESOURCE_ROLE}' label")
        stamp = _stamp(info)
        if stamp is not None:
            # The daemon stamps `received` when it accepts an event (SEMANTICS §1).
            object.__setattr__(self, "received", stamp)
        occurred = self.occurred
        if occurred.tzinfo is not UTC:
            object.__setattr__(self, "occurred", _as_utc(occurred))
        received = self.received
        if received is not None and received.tzinfo is not UTC:
            object.__setattr__(self, "received", _as_utc(received))
        return self

    @property
    def resource_id(self) -> str:
        """The primary resource's ``prefect.resource.id``."""
        return self.resource[RESOURCE_ID]

    def find_label(self, name: str) -> str | None:
        """A label of the event (SEMANTICS §1).

        ``related:<role>:<label>`` reads ``<label>`` of the first related
        resource with that role; any other name reads the primary resource.
        """
        head, _, label = name.rpartition(":")
        directive, _, role = head.partition(":")
        if directive == "related" and role:
            for related in self.related:
                if related.get(RESOURCE_ROLE) == role:
                    return related.get(label)
        return self.resource.get(name)
