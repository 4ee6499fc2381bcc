"""Compact messages between the daemon and its actors (trusted, already validated).

Events were validated once at ingest; between our own processes they travel
as msgpack with datetimes as msgpack timestamps and are rebuilt without
validating again (``model_construct``), as DESIGN.md asks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, SafeUUID

import msgpack

from marmot.engine.models.events import Event, trusted_event
from marmot.engine.models.triggers import Posture
from marmot.engine.triggers.firing import Firing, MetricReading, TriggerState

_local = threading.local()


def pack(value: Any) -> bytes:
    """msgpack with aware datetimes as timestamps."""
    # A packer per thread, kept: making one costs more than packing an event.
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(datetime=True, use_bin_type=True, autoreset=True)
    # A pack that fails resets the packer's buffer itself (msgpack does).
    return packer.pack(value)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    """The inverse of ``pack``; timestamps come back as aware UTC datetimes."""
    return msgpack.unpackb(data, timestamp=3, raw=False, strict_map_key=False)


def event_to_wire(event: Event) -> list[Any]:
    """An event as a positional list (smaller and faster than a map); ids as 16 bytes."""
    follows = event.follows
    return [
        event.id.bytes,
        event.occurred,
        event.event,
        event.resource,
        event.related,
        event.payload,
        follows.bytes if follows is not None else None,
        event.received,
    ]


def pack_event(event: Event) -> bytes:
    """An event as packed wire bytes: how the event log stores it and batches carry it."""
    return pack(event_to_wire(event))


def pack_events(events: Sequence[Event]) -> list[bytes]:
    """Events as ``pack_event`` packs each: one packer and no call per event, for
    the router, which packs every accepted event once."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(datetime=True, use_bin_type=True, autoreset=True)
    pack_one = packer.pack
    bodies: list[bytes] = []
    for event in events:
        fields = event.__dict__  # the model's fields; attribute access costs more
        follows = fields["follows"]
        bodies.append(
            pack_one(
                [
                    fields["id"].bytes,
                    fields["occurred"],
                    fields["event"],
                    fields["resource"],
                    fields["related"],
                    fields["payload"],
                    follows.bytes if follows is not None else None,
                    fields["received"],
                ]
            )
        )
    return bodies


def unpack_event(body: bytes) -> Event:
    """The trusted event ``pack_event`` packed."""
    return event_from_wire(unpack(body))


# Looked up once: reading an enum member off its class costs ~0.2 µs, as much as
# the rest of building the UUID.
_UNKNOWN_SAFETY = SafeUUID.unknown


def _uuid(value: bytes) -> UUID:
    """A UUID from its 16 bytes, built directly: ``UUID(bytes=...)`` costs more than
    the rest of rebuilding an event."""
    if len(value) != 16:
        raise ValueError(f"a UUID is 16 bytes, not {len(value)}")
    uuid = object.__new__(UUID)
    object.__setattr__(uuid, "int", int.from_bytes(value, "big"))
    object.__setattr__(uuid, "is_safe", _UNKNOWN_SAFETY)
    return uuid


def event_from_wire(row: Sequence[Any]) -> Event:
    """Rebuild a trusted event from ``event_to_wire`` output, without re-validating
    (automation actors rebuild every event they evaluate)."""
    event_id, occurred, name, resource, related, payload, follows, received = row
    return trusted_event(
        _uuid(event_id),
        _aware(occurred),
        name,
        resource,
        related,
        payload,
        _uuid(follows) if follows else None,
        _aware(received) if received is not None else None,
    )


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    raise TypeError(f"expected a timestamp, got {type(value).__name__}")


def pack_batch(rows: Sequence[tuple[int, Sequence[str], bytes]]) -> bytes:
    """A batch for one automation actor from events already packed (``pack_event``):
    each row is its log sequence number, target automations and event bytes."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)  # one per call: thread-safe
    row_header = packer.pack_array_header(3)
    parts = [packer.pack_array_header(len(rows))]
    for seq, targets, body in rows:
        parts.append(row_header)
        parts.append(packer.pack(seq))
        parts.append(packer.pack(targets))
        parts.append(body)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Batch:
    """Events for one automation actor: each with its log sequence number and targets."""

    rows: list[tuple[int, list[str], Event]]

    def pack(self) -> bytes:
        """The batch as one msgpack blob (one Ray call carries it)."""
        return pack_batch([(seq, targets, pack_event(e)) for seq, targets, e in self.rows])

    @staticmethod
    def unpack(blob: bytes) -> list[tuple[int, list[str], Event]]:
        """The rows of a packed batch."""
        return [(seq, targets, event_from_wire(row)) for seq, targets, row in unpack(blob)]


def firing_to_wire(firing: Firing) -> list[Any]:
    """A firing as a positional list, triggering event included."""
    event = firing.triggering_event
    return [
        str(firing.id),
        str(firing.automation_id),
        firing.trigger_path,
        dict(firing.labels),
        event_to_wire(event) if event is not None else None,
        firing.fired_us,
        firing.posture.value if firing.posture else None,
        firing.state.value,
        [str(c) for c in firing.child_ids],
        firing.deadline_us,
        firing.evaluated_us,
        firing.metric.as_payload() if firing.metric is not None else None,
    ]


def firing_from_wire(row: Sequence[Any]) -> Firing:
    """Rebuild a firing from ``firing_to_wire`` output."""
    fid, aid, path, labels, event, fired_us, posture, state, children, deadline_us, evaluated = row[
        :11
    ]
    # A metric firing's reading; rows written before it was carried have none.
    metric = row[11] if len(row) > 11 else None
    return Firing(
        id=UUID(fid),
        automation_id=UUID(aid),
        trigger_path=path,
        labels=labels,
        triggering_event=event_from_wire(event) if event is not None else None,
        fired_us=fired_us,
        posture=Posture(posture) if posture else None,
        state=TriggerState(state),
        child_ids=tuple(UUID(c) for c in children),
        deadline_us=deadline_us,
        evaluated_us=evaluated,
        metric=MetricReading.from_payload(metric) if metric else None,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an automation actor reports after ``apply`` or ``expire``."""

    firings: list[Firing]
    deadlines: dict[str, int | None]
    applied_seq: int
    evaluated: int
    missing: list[str] = field(default_factory=list)

    def pack(self) -> bytes:
        """The outcome as one msgpack blob."""
        return pack(
            [
                [firing_to_wire(f) for f in self.firings],
                self.deadlines,
                self.applied_seq,
                self.evaluated,
                self.missing,
            ]
        )

    @staticmethod
    def unpack(blob: bytes) -> Outcome:
        """An outcome from its blob."""
        firings, deadlines, applied_seq, evaluated, missing = unpack(blob)
        return Outcome(
            [firing_from_wire(f) for f in firings], deadlines, applied_seq, evaluated, missing
        )
