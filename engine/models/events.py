"""Events in Prefect's shape, validated once at the edge (SEMANTICS §1)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError, to_json

from marmot.engine.models._base import MarmotModel

RESOURCE_ID = "prefect.resource.id"
RESOURCE_ROLE = "prefect.resource.role"
RESOURCE_NAME = "prefect.resource.name"

# Prefect's defaults; override per validation with context={"limits": EventLimits(...)}.
DEFAULT_MAX_LABELS = 500
DEFAULT_MAX_RELATED = 500
MAX_EVENT_NAME = 1024
# Payloads are stored as JSON and re-packed as msgpack for the actors; both
# encoders refuse deep nesting (pydantic's JSON from about 250 levels, msgpack
# past 511), so an edge refuses anything deeper than this.
MAX_PAYLOAD_DEPTH = 100
# The error type of a payload over ``max_payload_bytes`` (ingest's drop reason).
PAYLOAD_TOO_LARGE = "payload_too_large"
# The calendar an ``occurred`` must fall in. Prefect's schema bounds it only by
# what its datetime type parses (years 1 to 9999) and clamps the events clock to
# now (triggers.update_events_clock); windows of up to ten years (MAX_WITHIN)
# then end past year 9999 and overflow. The engine counts microseconds from the
# Unix epoch and takes a negative deadline for "due now", so time starts there;
# and a window opened before OCCURRED_END still ends on the calendar, nested
# composite windows included.
OCCURRED_START = datetime(1970, 1, 1, tzinfo=UTC)
OCCURRED_END = datetime(9000, 1, 1, tzinfo=UTC)


class EventLimits(MarmotModel):
    """Size limits applied when an event is validated.

    ``max_payload_bytes`` bounds the payload's size as compact JSON (as it is
    stored); None leaves it unbounded.
    """

    max_labels: int = DEFAULT_MAX_LABELS
    max_related: int = DEFAULT_MAX_RELATED
    max_payload_bytes: int | None = None


_DEFAULT_LIMITS = EventLimits()


def _edge_limits(info: ValidationInfo) -> EventLimits | None:
    """The limits an edge (ingest, RPC, a file) validates with, if it gave any."""
    context = info.context
    if isinstance(context, dict):
        limits = context.get("limits")
        if isinstance(limits, EventLimits):
            return limits
    return None


def _payload_bound(info: ValidationInfo) -> float:
    """What the edge knows the payload's JSON size cannot exceed (the codec knows its frame)."""
    context = info.context
    if isinstance(context, dict):
        bound = context.get("payload_bound")
        if isinstance(bound, int):
            return bound
    return float("inf")


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


def _payload_problem(value: dict[Any, Any] | list[Any], depth: int = 1) -> str | None:
    """Why a payload could not be stored and re-sent as JSON, or None if it can.

    Recursive and type-exact on purpose: decoded containers are plain dicts
    and lists, and this runs for every event (~3x faster than a stack loop).
    """
    if depth > MAX_PAYLOAD_DEPTH:
        return f"payload: nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                return "payload: map keys must be strings"
        children: Any = value.values()
    else:
        children = value
    for child in children:
        kind = type(child)
        if kind is dict or kind is list:
            problem = _payload_problem(child, depth + 1)
            if problem is not None:
                return problem
        elif kind is bytes:
            return "payload: binary values are not allowed (events are JSON)"
    return None


def _check_payload_size(payload: dict[str, Any], limit: int) -> None:
    try:
        size = len(to_json(payload, inf_nan_mode="null"))
    except ValueError as exc:  # PydanticSerializationError: e.g. a lone surrogate
        raise ValueError(f"payload: cannot be stored as JSON: {exc}") from None
    if size > limit:
        raise PydanticCustomError(
            PAYLOAD_TOO_LARGE,
            "payload: {size} bytes as JSON; at most {limit} are allowed",
            {"size": size, "limit": limit},
        )


def _check_labels(labels: dict[str, str], where: str, limits: EventLimits) -> None:
    if len(labels) > limits.max_labels:
        raise ValueError(
            f"{where} has {len(labels)} labels; at most {limits.max_labels} are allowed"
        )
    if not labels.get(RESOURCE_ID):
        raise ValueError(f"{where} must have a non-empty '{RESOURCE_ID}' label")


class Event(MarmotModel):
    """One event: something that happened to a resource, at a time.

    ``occurred`` must be on or after ``OCCURRED_START`` (the Unix epoch) and
    before ``OCCURRED_END`` (year 9000); naive times are taken as UTC.

    Validate with ``context={"limits": EventLimits(...), "received": now}`` to
    apply other limits and stamp the time of acceptance. Given limits, the
    payload is checked too (JSON values only, depth, size): edges pass them,
    while events read back from the log were checked when they were accepted.
    An edge that knows the payload's JSON size is at most N bytes may pass
    ``"payload_bound": N`` to skip measuring it.
    """

    model_config = MarmotModel.model_config | {"frozen": True}

    id: UUID = Field(default_factory=uuid4)
    # Checked by pydantic's own datetime validator (no Python call per event),
    # so a refusal names the field: "occurred: Input should be less than ...".
    occurred: datetime = Field(ge=OCCURRED_START, lt=OCCURRED_END)
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
        edge = _edge_limits(info)
        limits = _DEFAULT_LIMITS if edge is None else edge
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
        payload = self.payload
        if payload and edge is not None:
            problem = _payload_problem(payload)
            if problem is not None:
                raise ValueError(problem)
            limit = edge.max_payload_bytes
            if limit is not None and _payload_bound(info) > limit:
                _check_payload_size(payload, limit)
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


_EVENT_FIELDS = frozenset(Event.model_fields)
# Every trusted event has all its fields set, so they share one set: pydantic
# writes to it only on a copy (``model_copy`` and ``__copy__`` copy it first)
# or on assignment, which a frozen model refuses.
_ALL_FIELDS_SET = set(_EVENT_FIELDS)
# The slots of pydantic's BaseModel, set through their descriptors: ~40 % less
# than four ``object.__setattr__`` calls, on the path every event takes.
_new_event = object.__new__
_set_dict = object.__setattr__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def trusted_event(
    id: UUID,
    occurred: datetime,
    event: str,
    resource: dict[str, str],
    related: list[dict[str, str]],
    payload: dict[str, Any],
    follows: UUID | None = None,
    received: datetime | None = None,
) -> Event:
    """An event from values known to be valid (made by Marmot, or validated at
    ingest and carried between its processes), without validating again.

    It fills the model's fields directly, as ``model_construct`` does but about
    six times faster: the event is equal to, and dumps as, the validated one.
    Datetimes must be aware UTC.
    """
    made = _new_event(Event)
    _set_dict(
        made,
        "__dict__",
        {
            "id": id,
            "occurred": occurred,
            "event": event,
            "resource": resource,
            "related": related,
            "payload": payload,
            "follows": follows,
            "received": received,
        },
    )
    _set_fields_set(made, _ALL_FIELDS_SET)
    _set_extra(made, None)
    _set_private(made, None)
    return made


def dump_event(event: Event | None) -> dict[str, Any] | None:
    """An event as JSON-safe values (for snapshots), or None."""
    return event.model_dump(mode="json") if event is not None else None


def load_event(data: Mapping[str, Any] | None) -> Event | None:
    """The event ``dump_event`` wrote, or None."""
    return Event.model_validate(data) if data is not None else None
