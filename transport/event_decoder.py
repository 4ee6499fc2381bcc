"""The fast path of event decoding: plainly valid events straight from bytes, in one pass.

Decoding a typical event with ``msgpack``/``json`` and then validating it
with the pydantic ``Event`` model took about twice as long as decoding it
with msgspec into a lean struct, checking the few rules a struct cannot
say, and making the ``Event`` without validating it again
(``trusted_event``): bench/validation.py prints the options side by side.

Per frame, not per event, where Python would cost more than the decoding:
the struct keeps each event's ``occurred`` and ``payload`` as raw bytes, and
event_fields.py reads a whole frame's times, then its payloads, with one C
call each. A typical event (3 labels, 2 related resources, a small
payload) went from ~5.7 to ~3.9 us, the events bench/daemon.py sends from
~4.1 to ~2.1 us (batches of 200, a loaded 2-core machine).

The pydantic model stays the schema and the judge: this path accepts only
what the model accepts, with the same values, and leaves anything else to
the model (the caller validates that event, or the whole frame, with it),
which accepts what this path did not know to (naive or unusual timestamps,
braced UUIDs...) or refuses it with its own messages and field paths. So it
is conservative where msgspec and pydantic differ:

* timestamps given as text must carry an offset and at most 6 fractional
  digits (msgspec rounds extra digits where pydantic truncates them), and
  msgpack timestamps are read here as msgpack-python reads them (cut to
  microseconds: msgspec would round them too);
* integers in a JSON payload must fit in 64 bits (the codec refuses others);
* a msgpack extension other than the timestamp, or a map with a key that is
  not a string, leaves the event to the model (which refuses it).

tests/transport/test_event_decoder.py decodes good and hostile frames both
ways and asserts the same events and rejections.
"""

from __future__ import annotations

import gc
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec

from marmot.engine.models.events import (
    MAX_EVENT_NAME,
    RESOURCE_ID,
    RESOURCE_ROLE,
    Event,
    EventLimits,
    trusted_event,
)
from marmot.transport.event_fields import (
    READ_ERRORS,
    Unusual,
    read_json_time,
    read_msgpack_time,
    read_payloads,
    read_times,
)
from marmot.transport.event_ids import new_event_id

__all__ = ["fast_document_events", "fast_elements", "fast_event_line", "fast_events"]

_NULLS: Final = (b"\xc0", b"null")  # msgpack nil, JSON null


def _no_extension(code: int, data: memoryview) -> Any:
    # The timestamp extension is decoded by msgspec itself; any other is refused
    # by the codec, with its message.
    raise Unusual


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An event as it comes in; the times stay raw, to be read as the model does."""

    occurred: msgspec.Raw
    event: str
    resource: dict[str, str]
    id: UUID = msgspec.field(default_factory=new_event_id)
    related: list[dict[str, str]] = msgspec.field(default_factory=list)
    # Kept raw: its encoded size bounds its size as JSON, so most need no measuring.
    payload: msgspec.Raw = msgspec.Raw(b"")
    follows: UUID | None = None
    received: msgspec.Raw = msgspec.Raw(b"")  # empty: not given


_MSGPACK_ONE: Final = msgspec.msgpack.Decoder(_WireEvent, ext_hook=_no_extension)
_MSGPACK_MANY: Final = msgspec.msgpack.Decoder(list[_WireEvent], ext_hook=_no_extension)
_JSON_ONE: Final = msgspec.json.Decoder(_WireEvent)
_JSON_MANY: Final = msgspec.json.Decoder(list[_WireEvent])
# A batch split into its elements' bytes, when some are left to the model.
_MSGPACK_ELEMENTS: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])
_JSON_ELEMENTS: Final = msgspec.json.Decoder(list[msgspec.Raw])


def _plain_events(
    wires: list[_WireEvent],
    is_json: bool,
    limits: EventLimits,
    received: datetime | None,
) -> list[Event | None]:
    """The event the model would make of each wire event, None where the model
    must judge it (anything invalid or unusual)."""
    # Raw values, not copied: joining reads their buffers.
    times = read_times([wire.occurred for wire in wires], is_json)
    payloads = read_payloads([wire.payload for wire in wires], is_json, limits)
    max_labels = limits.max_labels
    max_related = limits.max_related
    resource_id, resource_role = RESOURCE_ID, RESOURCE_ROLE
    events: list[Event | None] = []
    # One loop with the checks inline: a call per event or per related resource
    # costs a tenth of the budget (bench/validation.py).
    for wire, occurred, payload in zip(wires, times, payloads, strict=True):
        name = wire.event
        resource = wire.resource
        related = wire.related
        if (
            occurred is None
            or payload is None
            or not name
            or len(name) > MAX_EVENT_NAME
            or len(resource) > max_labels
            or not resource.get(resource_id)
        ):
            events.append(None)
            continue
        if related:
            plain = len(related) <= max_related
            for labels in related:
                if (
                    len(labels) > max_labels
                    or not labels.get(resource_id)
                    or not labels.get(resource_role)
                ):
                    plain = False
                    break
            if not plain:
                events.append(None)
                continue
        stamp = received
        if wire.received:
            given = bytes(wire.received)
            if given not in _NULLS:
                # Checked even when the edge stamps its own.
                try:
                    stamped = (read_json_time if is_json else read_msgpack_time)(given)
                except READ_ERRORS:
                    events.append(None)
                    continue
                if stamp is None:
                    stamp = stamped
        events.append(
            trusted_event(wire.id, occurred, name, resource, related, payload, wire.follows, stamp)
        )
    return events


def fast_events(
    data: bytes,
    is_json: bool,
    *,
    limits: EventLimits,
    max_batch: int,
    received: datetime | None,
) -> list[Event] | None:
    """The events of a frame (one event map or an array of them) when every one
    of them is plainly valid; None when anything in it is left to the model
    (including anything invalid, undecodable or over a limit)."""
    try:
        if _is_one(data, is_json):
            wires = [(_JSON_ONE if is_json else _MSGPACK_ONE).decode(data)]
        else:
            wires = (_JSON_MANY if is_json else _MSGPACK_MANY).decode(data)
            if len(wires) > max_batch:
                return None
    except READ_ERRORS:
        return None
    events = _plain_events(wires, is_json, limits, received)
    plain = [event for event in events if event is not None]
    return plain if len(plain) == len(events) else None


def fast_elements(
    data: bytes,
    is_json: bool,
    *,
    limits: EventLimits,
    max_batch: int,
    received: datetime | None,
) -> list[Event | bytes] | None:
    """The elements of an array frame: each one's event when it is plainly valid,
    else its bytes, for the model to judge; None when the frame is not an array
    of at most ``max_batch`` elements this path can split.

    The plainly valid events of a batch with a bad one need not be validated
    again by the model."""
    made: list[Event | None] = []
    try:
        wires: list[_WireEvent] | None = (_JSON_MANY if is_json else _MSGPACK_MANY).decode(data)
    except READ_ERRORS:
        wires = None  # an element of the wrong shape: each is read on its own
    if wires is not None:
        if len(wires) > max_batch:
            return None
        made = _plain_events(wires, is_json, limits, received)
        plain: list[Event | bytes] = [event for event in made if event is not None]
        if len(plain) == len(made):
            return plain
    try:
        elements = (_JSON_ELEMENTS if is_json else _MSGPACK_ELEMENTS).decode(data)
    except READ_ERRORS:
        return None
    if len(elements) > max_batch:
        return None
    decode = (_JSON_ONE if is_json else _MSGPACK_ONE).decode
    result: list[Event | bytes] = []
    for index, element in enumerate(elements):
        encoded = bytes(element)
        event = made[index] if made else None
        if event is None and not made:
            try:
                event = _plain_events([decode(encoded)], is_json, limits, received)[0]
            except READ_ERRORS:
                event = None
        result.append(encoded if event is None else event)
    return result


def _is_one(data: bytes, is_json: bool) -> bool:
    """Whether a frame holds one event map (else an array, or nothing this path reads)."""
    if is_json:
        return data.lstrip()[:1] == b"{"
    head = data[:1]
    # fixmap, map16, map32
    return bool(head) and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


class _EventsDocument(msgspec.Struct):
    """A document with an ``events`` array (a replay scenario), other fields skipped."""

    events: list[msgspec.Raw] = msgspec.field(default_factory=list)


_EVENTS_DOCUMENT: Final = msgspec.json.Decoder(_EventsDocument)


def fast_event_line(line: bytes, limits: EventLimits) -> Event | None:
    """One JSON object (a line of an events file, validated without a ``received``
    stamp) as an event when plainly valid; None when the model must judge it."""
    if line.lstrip()[:1] != b"{":
        return None
    events = fast_events(line, True, limits=limits, max_batch=1, received=None)
    return events[0] if events else None


def fast_document_events(document: bytes, limits: EventLimits) -> list[Event | None] | None:
    """The events of a JSON document's ``events`` array, each None where the model
    must judge it; None when the document cannot be read this way."""
    # Events are kept, not garbage: the cyclic collector, run again and again
    # over a growing heap, would take most of the time (as in read_events).
    collecting = gc.isenabled()
    gc.disable()
    try:
        raws = _EVENTS_DOCUMENT.decode(document).events
        return [fast_event_line(bytes(raw), limits) for raw in raws]
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    finally:
        if collecting:
            gc.enable()
