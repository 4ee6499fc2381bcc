"""The fast path of event decoding: plainly valid events straight from bytes, in one pass.

Decoding a typical event with ``msgpack``/``json`` and then validating it
with the pydantic ``Event`` model took about twice as long as decoding it
with msgspec into a lean struct, checking the few rules a struct cannot
say, and making the ``Event`` without validating it again
(``trusted_event``): bench/validation.py prints the options side by side.

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
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid4

import msgspec
from pydantic_core import to_json

from marmot.engine.models.events import (
    MAX_EVENT_NAME,
    MAX_PAYLOAD_DEPTH,
    OCCURRED_END,
    OCCURRED_START,
    RESOURCE_ID,
    RESOURCE_ROLE,
    Event,
    EventLimits,
    trusted_event,
)

__all__ = ["fast_document_events", "fast_elements", "fast_event_line", "fast_events"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NULLS: Final = (b"\xc0", b"null")  # msgpack nil, JSON null
_JSON_GROWTH: Final = 6
_MIN_INT: Final = -(2**63)
_MAX_INT: Final = 2**64 - 1


class _Unusual(Exception):
    """The frame holds something this path leaves to the model."""


def _no_extension(code: int, data: memoryview) -> Any:
    # The timestamp extension is decoded by msgspec itself; any other is refused
    # by the codec, with its message.
    raise _Unusual


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """An event as it comes in; the times stay raw, to be read as the model does."""

    occurred: msgspec.Raw
    event: str
    resource: dict[str, str]
    id: UUID = msgspec.field(default_factory=uuid4)
    related: list[dict[str, str]] = msgspec.field(default_factory=list)
    # Kept raw: its encoded size bounds its size as JSON, so most need no measuring.
    payload: msgspec.Raw = msgspec.Raw(b"")
    follows: UUID | None = None
    received: msgspec.Raw = msgspec.Raw(b"")  # empty: not given


_MSGPACK_ONE: Final = msgspec.msgpack.Decoder(_WireEvent, ext_hook=_no_extension)
_MSGPACK_MANY: Final = msgspec.msgpack.Decoder(list[_WireEvent], ext_hook=_no_extension)
_MSGPACK_PAYLOAD: Final = msgspec.msgpack.Decoder(dict[str, Any], ext_hook=_no_extension)
_JSON_ONE: Final = msgspec.json.Decoder(_WireEvent)
_JSON_MANY: Final = msgspec.json.Decoder(list[_WireEvent])
# A batch split into its elements' bytes, when some are left to the model.
_MSGPACK_ELEMENTS: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])
_JSON_ELEMENTS: Final = msgspec.json.Decoder(list[msgspec.Raw])
_JSON_PAYLOAD: Final = msgspec.json.Decoder(dict[str, Any])
# An empty map, as each encoding writes it.
_EMPTY: Final = (b"\x80", b"{}")
_JSON_TIME: Final = msgspec.json.Decoder(datetime)
# msgspec rounds fractional seconds past microseconds; pydantic truncates them.
_SUB_MICROSECONDS: Final = re.compile(rb"\.[0-9]{7}")
_MSGPACK_TIME: Final = msgspec.msgpack.Decoder(datetime)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise _Unusual  # naive: the model takes it as UTC
    if value.tzinfo is not UTC:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise _Unusual from None
    return value


def _text_time(
    raw: bytes, decoder: msgspec.json.Decoder[datetime] | msgspec.msgpack.Decoder[datetime]
) -> datetime:
    """RFC 3339 text read by msgspec, but only with at most 6 fractional digits."""
    if _SUB_MICROSECONDS.search(raw) is not None:
        raise _Unusual
    return _as_utc(decoder.decode(raw))


def _msgpack_time(raw: bytes) -> datetime:
    """A msgpack timestamp (ext -1) as msgpack-python makes it: nanoseconds cut
    to microseconds (msgspec would round them), or text as in JSON."""
    head = raw[0]
    if head == 0xD6 and raw[1] == 0xFF:  # timestamp 32: seconds
        seconds, nanoseconds = int.from_bytes(raw[2:6], "big"), 0
    elif head == 0xD7 and raw[1] == 0xFF:  # timestamp 64: 30-bit ns, 34-bit seconds
        packed = int.from_bytes(raw[2:10], "big")
        seconds, nanoseconds = packed & 0x3_FFFF_FFFF, packed >> 34
    elif head == 0xC7 and raw[1] == 12 and raw[2] == 0xFF:  # timestamp 96
        nanoseconds = int.from_bytes(raw[3:7], "big")
        seconds = int.from_bytes(raw[7:15], "big", signed=True)
    elif 0xA0 <= head <= 0xBF or head in (0xD9, 0xDA, 0xDB):
        return _text_time(raw, _MSGPACK_TIME)
    else:
        raise _Unusual
    if nanoseconds > 999_999_999:
        raise _Unusual
    try:
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanoseconds // 1000)
    except OverflowError:
        raise _Unusual from None


def _json_time(raw: bytes) -> datetime:
    """RFC 3339 text from a JSON string."""
    return _text_time(raw, _JSON_TIME)


def _check_payload(value: dict[Any, Any] | list[Any], depth: int = 1) -> None:
    """What ``Event`` checks of a payload at an edge, plus the codec's integer range."""
    if depth > MAX_PAYLOAD_DEPTH:
        raise _Unusual
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                raise _Unusual
        children: Any = value.values()
    else:
        children = value
    for child in children:
        kind = type(child)
        if kind is dict or kind is list:
            _check_payload(child, depth + 1)
        elif kind is int:
            if child < _MIN_INT or child > _MAX_INT:
                raise _Unusual
        elif kind is bytes:
            raise _Unusual


def _event(
    wire: _WireEvent,
    is_json: bool,
    limits: EventLimits,
    received: datetime | None,
) -> Event:
    """The event the model would make of ``wire``; raises ``_Unusual`` otherwise."""
    name = wire.event
    if not name or len(name) > MAX_EVENT_NAME:
        raise _Unusual
    read_time = _json_time if is_json else _msgpack_time
    occurred = read_time(bytes(wire.occurred))
    if occurred < OCCURRED_START or occurred >= OCCURRED_END:
        raise _Unusual
    resource = wire.resource
    if len(resource) > limits.max_labels or not resource.get(RESOURCE_ID):
        raise _Unusual
    related = wire.related
    if related:
        if len(related) > limits.max_related:
            raise _Unusual
        max_labels = limits.max_labels
        for labels in related:
            if (
                len(labels) > max_labels
                or not labels.get(RESOURCE_ID)
                or not labels.get(RESOURCE_ROLE)
            ):
                raise _Unusual
    payload: dict[str, Any] = {}
    encoded = bytes(wire.payload)
    if encoded and encoded not in _EMPTY:
        payload = (_JSON_PAYLOAD if is_json else _MSGPACK_PAYLOAD).decode(encoded)
        if payload:
            _check_payload(payload)
            limit = limits.max_payload_bytes
            # No byte of msgpack or JSON becomes more than 6 bytes of JSON (codec.py).
            if limit is not None and _JSON_GROWTH * len(encoded) + 2 > limit:
                try:
                    size = len(to_json(payload, inf_nan_mode="null"))
                except ValueError:
                    raise _Unusual from None
                if size > limit:
                    raise _Unusual
    given = bytes(wire.received)
    if given and given not in _NULLS:
        stamped = read_time(given)  # checked even when the edge stamps its own
        if received is None:
            received = stamped
    return trusted_event(
        wire.id, occurred, name, resource, related, payload, wire.follows, received
    )


_FAST_ERRORS: Final = (
    _Unusual,
    msgspec.DecodeError,
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
)


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
            one = (_JSON_ONE if is_json else _MSGPACK_ONE).decode(data)
            return [_event(one, is_json, limits, received)]
        many = (_JSON_MANY if is_json else _MSGPACK_MANY).decode(data)
        if len(many) > max_batch:
            return None
        return [_event(wire, is_json, limits, received) for wire in many]
    except _FAST_ERRORS:
        return None


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
    except _FAST_ERRORS:
        wires = None  # an element of the wrong shape: each is read on its own
    if wires is not None:
        if len(wires) > max_batch:
            return None
        made = [_plain_event(wire, is_json, limits, received) for wire in wires]
        plain: list[Event | bytes] = [event for event in made if event is not None]
        if len(plain) == len(made):
            return plain
    try:
        elements = (_JSON_ELEMENTS if is_json else _MSGPACK_ELEMENTS).decode(data)
    except _FAST_ERRORS:
        return None
    if len(elements) > max_batch:
        return None
    decode = (_JSON_ONE if is_json else _MSGPACK_ONE).decode
    result: list[Event | bytes] = []
    for index, element in enumerate(elements):
        encoded = bytes(element)
        event = made[index] if made else None
        if event is None:
            try:
                event = _plain_event(decode(encoded), is_json, limits, received)
            except _FAST_ERRORS:
                event = None
        result.append(encoded if event is None else event)
    return result


def _plain_event(
    wire: _WireEvent, is_json: bool, limits: EventLimits, received: datetime | None
) -> Event | None:
    try:
        return _event(wire, is_json, limits, received)
    except _FAST_ERRORS:
        return None


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
