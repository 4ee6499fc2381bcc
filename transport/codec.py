"""Bytes <-> values: msgpack (and JSON) ingest frames to events, and RPC value packing.

``decode_frame`` turns one ingest frame into validated events plus the reasons
anything in it was refused; it never raises. ``pack_rpc``/``unpack_rpc`` are the
msgpack dialect every RPC frame uses (datetimes as msgpack timestamps).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, NoReturn
from uuid import UUID

import msgpack
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from marmot.engine.errors import ValidationFailed
from marmot.engine.models.events import (
    MAX_PAYLOAD_DEPTH,
    PAYLOAD_TOO_LARGE,
    Event,
    EventLimits,
)
from marmot.transport.event_decoder import fast_elements, fast_events
from marmot.transport.event_ids import new_event_id

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "REASONS",
    "DecodedFrame",
    "Rejection",
    "decode_frame",
    "event_frame",
    "events_frame",
    "pack_rpc",
    "unpack_rpc",
]

DEFAULT_MAX_FRAME_BYTES: Final = 1_048_576
DEFAULT_MAX_BATCH: Final = 10_000

# Rejection reasons: stable strings, used as a Prometheus label.
TOO_LARGE: Final = "too_large"
UNDECODABLE: Final = "undecodable"
NOT_AN_EVENT: Final = "not_an_event"
BATCH_TOO_LARGE: Final = "batch_too_large"
INVALID_EVENT: Final = "invalid_event"
# PAYLOAD_TOO_LARGE ("payload_too_large") comes with the limit from the Event model.
REASONS: Final = frozenset(
    {TOO_LARGE, UNDECODABLE, NOT_AN_EVENT, BATCH_TOO_LARGE, INVALID_EVENT, PAYLOAD_TOO_LARGE}
)

_JSON_WHITESPACE: Final = b" \t\n\r"
_JSON_OPENERS: Final = (b"{", b"[")
# JSON may escape a lone UTF-16 surrogate, which no UTF-8 store or msgpack takes.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
# Accepted events are re-packed as msgpack for the actors, which carries
# integers in 64 bits only; JSON's are unbounded.
_MIN_INT: Final = -(2**63)
_MAX_INT: Final = 2**64 - 1
# No byte of a msgpack or JSON frame becomes more than 6 bytes of JSON (a
# control character in a string becomes \u00XX; `false` in an array `false,`),
# so the payloads of an N-byte frame are at most 6N + 2 bytes as JSON each and
# need not be measured against a larger max_payload_bytes.
_JSON_GROWTH: Final = 6
_DEFAULT_LIMITS: Final = EventLimits()
_MAX_ERROR_TEXT: Final = 200
_MAX_LISTED_ERRORS: Final = 5
# What decoding untrusted bytes may raise: msgpack's errors are ValueErrors
# (truncated, extra data, bad UTF-8, over a length limit, too deep); unhashable
# keys raise TypeError, out-of-range timestamps OverflowError, deep JSON
# RecursionError.
_DECODE_ERRORS: Final = (
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    msgpack.UnpackException,
)
# msgpack raises these without a message.
_SILENT_ERRORS: Final[dict[type[BaseException], str]] = {
    msgpack.FormatError: "a byte that starts no msgpack value",
    msgpack.StackError: "nested too deeply",
}
# A model-level check of Event names its field first ("resource must have ...").
_LEADING_FIELD = re.compile(r"^(resource|related(?:\[\d+\])?) (.+)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why (part of) a frame was dropped; ``index`` is the batch position, if any."""

    reason: str
    message: str
    index: int | None = None


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """The events a frame carried and the rejections of whatever else it held."""

    events: list[Event]
    rejections: list[Rejection]


# ---------------------------------------------------------------- RPC values


def _as_utc(value: datetime) -> datetime:
    # Naive datetimes are taken as UTC, as Event does.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _default(value: object) -> object:
    """msgpack's fallback for the types it does not pack itself."""
    if isinstance(value, datetime):
        # Handled here rather than with msgpack's datetime=True, which refuses
        # naive datetimes and datetime subclasses.
        return msgpack.Timestamp.from_datetime(_as_utc(value))
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python")
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, date | time):
        return value.isoformat()
    try:
        # Enums, Decimals, timedeltas, paths, dataclasses...: as pydantic's JSON mode has them.
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise TypeError(f"cannot pack a {type(value).__name__}") from exc


def pack_rpc(value: Any) -> bytes:
    """Pack a value as msgpack for the RPC wire.

    Datetimes become msgpack timestamps (naive ones are taken as UTC), UUIDs
    strings, pydantic models their ``model_dump()``, sets and tuples arrays.
    Raises ``TypeError`` (or ``ValueError`` for nesting over 511 levels) when a
    value cannot be packed.
    """
    packed: bytes = msgpack.packb(value, default=_default, use_bin_type=True)
    return packed


def unpack_rpc(data: bytes) -> Any:
    """Unpack msgpack from ``pack_rpc``; timestamps come back as aware UTC datetimes.

    Raises ``ValidationFailed`` when the bytes are not one complete msgpack value.
    """
    try:
        return msgpack.unpackb(data, timestamp=3, raw=False, strict_map_key=False)
    except _DECODE_ERRORS as exc:
        raise ValidationFailed(f"undecodable msgpack: {_error_text(exc)}") from None


# ---------------------------------------------------------------- encoding events


def _event_map(event: Event) -> dict[str, Any]:
    document = event.model_dump(mode="json")
    document["occurred"] = event.occurred
    if event.received is not None:
        document["received"] = event.received
    return document


def event_frame(event: Event) -> bytes:
    """One event as an ingest frame: a msgpack map, times as msgpack timestamps."""
    packed: bytes = msgpack.packb(_event_map(event), datetime=True, use_bin_type=True)
    return packed


def events_frame(events: Sequence[Event]) -> bytes:
    """A batch as one ingest frame: a msgpack array of event maps."""
    documents = [_event_map(event) for event in events]
    packed: bytes = msgpack.packb(documents, datetime=True, use_bin_type=True)
    return packed


# ---------------------------------------------------------------- decoding frames


def _refuse_extension(code: int, data: bytes) -> NoReturn:
    # Only the timestamp extension (handled by msgpack itself) belongs in an event.
    raise ValueError(f"unsupported msgpack extension type {code}")


def _is_json(data: bytes) -> bool:
    head = data[:1]
    if head in _JSON_OPENERS:
        return True
    if head and head in _JSON_WHITESPACE:
        return data.lstrip(_JSON_WHITESPACE)[:1] in _JSON_OPENERS
    return False


def _json_int(text: str) -> int:
    value = int(text)
    if value < _MIN_INT or value > _MAX_INT:
        raise ValueError("an integer outside the 64-bit range")
    return value


def _load_json(data: bytes) -> Any:
    value = json.loads(data.decode("utf-8"), parse_int=_json_int)
    if _SURROGATE_ESCAPE.search(data) is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone UTF-16 surrogate") from None
    return value


def _declared_batch(data: bytes) -> int | None:
    """How many elements the msgpack array header a frame starts with declares, if any."""
    head = data[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC:
        return int.from_bytes(data[1:3], "big")
    if head == 0xDD:
        return int.from_bytes(data[1:5], "big")
    return None


def _load(data: bytes, is_json: bool) -> Any:
    """The frame's one value; raises one of ``_DECODE_ERRORS`` if there is none."""
    if is_json:
        return _load_json(data)
    # unpackb bounds every declared length by len(data), so a lying header is
    # refused before anything is allocated; its C stack refuses deep nesting.
    return msgpack.unpackb(data, timestamp=3, raw=False, ext_hook=_refuse_extension)


def _unpack_batch(data: bytes) -> tuple[list[Any], list[int]]:
    """A msgpack array frame's elements, each with its size in bytes.

    An element's size bounds its payload's, so the payloads of a big batch
    need not be measured one by one: reading elements one at a time costs
    ~0.5 us each, measuring a payload 1-2 us. Raises as ``_load`` does.
    """
    unpacker = msgpack.Unpacker(
        timestamp=3, raw=False, ext_hook=_refuse_extension, max_buffer_size=len(data)
    )
    unpacker.feed(data)
    items: list[Any] = []
    sizes: list[int] = []
    start = unpacker.tell()
    for _ in range(unpacker.read_array_header()):
        items.append(unpacker.unpack())
        end = unpacker.tell()
        sizes.append(end - start)
        start = end
    if start != len(data):
        raise ValueError("extra data after the batch")
    return items, sizes


def _kind(value: object) -> str:
    """The wire name of a value's type, for messages."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (dict, "a map"),
        (list, "an array"),
        (str, "a string"),
        (bytes, "binary data"),
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (datetime, "a timestamp"),
    )
    if value is None:
        return "nil"
    for cls, name in kinds:
        if isinstance(value, cls):
            return name
    return f"a {type(value).__name__}"


def _error_text(exc: BaseException) -> str:
    text = str(exc) or _SILENT_ERRORS.get(type(exc), type(exc).__name__)
    if len(text) > _MAX_ERROR_TEXT:
        return text[:_MAX_ERROR_TEXT] + "..."
    return text


def _format_loc(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``path: what is wrong``."""
    loc = _format_loc(error["loc"])
    message = str(error["msg"])
    context = error.get("ctx") or {}
    if error["type"] == "value_error" and "error" in context:
        message = str(context["error"])
    if not loc:
        match = _LEADING_FIELD.match(message)
        if match is None:
            return message
        loc, message = match.group(1), match.group(2)
    return f"{loc}: {message}"


def _describe_validation(errors: Sequence[Mapping[str, Any]]) -> str:
    parts = [_describe_error(error) for error in errors[:_MAX_LISTED_ERRORS]]
    if len(errors) > _MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_LISTED_ERRORS} more")
    return "; ".join(parts)


def _validate(value: object, context: dict[str, Any]) -> Event | tuple[str, str]:
    """The event a value describes, or ``(reason, message)`` saying why it does not."""
    if not isinstance(value, dict):
        return NOT_AN_EVENT, f"an event must be a map, not {_kind(value)}"
    if "id" not in value:
        value = {**value, "id": new_event_id()}  # time-ordered, as the fast path's
    try:
        return Event.model_validate(value, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # The payload's size is checked once every field is valid, so alone.
        reason = PAYLOAD_TOO_LARGE if errors[0]["type"] == PAYLOAD_TOO_LARGE else INVALID_EVENT
        return reason, _describe_validation(errors)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # e.g. a time whose offset puts it outside datetime's range once made UTC
        return INVALID_EVENT, f"out of range: {_error_text(exc)}"


def _reject(reason: str, message: str) -> DecodedFrame:
    return DecodedFrame(events=[], rejections=[Rejection(reason, message)])


def _too_many(count: int, max_batch: int) -> DecodedFrame:
    return _reject(BATCH_TOO_LARGE, f"batch of {count} events is over the limit of {max_batch}")


def _decode_batch(
    items: list[Any], context: dict[str, Any], sizes: list[int] | None
) -> DecodedFrame:
    events: list[Event] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        if sizes is not None:
            context["payload_bound"] = _JSON_GROWTH * sizes[index] + 2
        _keep(_validate(item, context), index, events, rejections)
    return DecodedFrame(events=events, rejections=rejections)


def _keep(
    outcome: Event | tuple[str, str],
    index: int,
    events: list[Event],
    rejections: list[Rejection],
) -> None:
    """File a batch element's outcome: the event, or its rejection named by index."""
    if isinstance(outcome, Event):
        events.append(outcome)
    else:
        reason, message = outcome
        rejections.append(Rejection(reason, f"event {index}: {message}", index))


def decode_frame(
    data: bytes,
    *,
    limits: EventLimits | None = None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    received: datetime | None = None,
) -> DecodedFrame:
    """Decode and validate one ingest frame; never raises.

    A frame is a msgpack (or JSON, when it starts with ``{`` or ``[``) map
    holding one event, or an array of them. Good events of a batch are kept
    even when others are rejected; a batch over ``max_batch`` is refused
    whole, by its declared length when it is msgpack. ``received``, when
    given, is stamped on every event (SEMANTICS §1). Every rejection's
    ``reason`` is one of ``REASONS``.
    """
    size = len(data)
    if size > max_frame_bytes:
        return _reject(TOO_LARGE, f"frame of {size} bytes is over the limit of {max_frame_bytes}")
    data = bytes(data)
    limits = _DEFAULT_LIMITS if limits is None else limits
    is_json = _is_json(data)
    declared = _declared_batch(data) if size and not is_json else None
    # Refused before a million empty maps are built. Each element takes a
    # byte at least and a header 5 at most: a header declaring more than that
    # lies, and unpacking refuses it as undecodable.
    if declared is not None and max_batch < declared <= size - 5:
        return _too_many(declared, max_batch)
    # Plainly valid events go the fast way; anything else is judged by the model.
    if declared is not None or (is_json and data.lstrip(_JSON_WHITESPACE)[:1] == b"["):
        batch = _decode_batch_fast(data, is_json, limits, max_batch, received)
        if batch is not None:
            return batch
    elif size:
        fast = fast_events(data, is_json, limits=limits, max_batch=max_batch, received=received)
        if fast is not None:
            return DecodedFrame(events=fast, rejections=[])
    return _decode_with_model(data, is_json, declared, limits, max_batch, received)


def _decode_batch_fast(
    data: bytes, is_json: bool, limits: EventLimits, max_batch: int, received: datetime | None
) -> DecodedFrame | None:
    """A batch, its plainly valid events made the fast way and the others judged by
    the model one by one, as ``_decode_batch`` would; None when the frame cannot
    be split or an element cannot be decoded (the model's way then says why)."""
    elements = fast_elements(data, is_json, limits=limits, max_batch=max_batch, received=received)
    if elements is None:
        return None
    events: list[Event] = []
    rejections: list[Rejection] = []
    for index, element in enumerate(elements):
        if isinstance(element, Event):
            events.append(element)
            continue
        encoded = element
        try:
            value = _load(encoded, is_json)
        except _DECODE_ERRORS:
            return None
        context = {
            "received": received,
            "limits": limits,
            "payload_bound": _JSON_GROWTH * len(encoded) + 2,
        }
        _keep(_validate(value, context), index, events, rejections)
    return DecodedFrame(events=events, rejections=rejections)


def _decode_with_model(
    data: bytes,
    is_json: bool,
    declared: int | None,
    limits: EventLimits,
    max_batch: int,
    received: datetime | None,
) -> DecodedFrame:
    """``decode_frame`` by the pydantic model, event by event: what the fast path
    leaves (anything invalid or unusual), with the model's messages."""
    bound = _JSON_GROWTH * len(data) + 2
    max_payload = limits.max_payload_bytes
    value: Any
    sizes: list[int] | None = None
    try:
        if declared is not None and max_payload is not None and bound > max_payload:
            value, sizes = _unpack_batch(data)
        else:
            value = _load(data, is_json)
    except _DECODE_ERRORS as exc:
        return _reject(UNDECODABLE, f"not a msgpack or JSON value: {_error_text(exc)}")
    context: dict[str, Any] = {"received": received, "limits": limits, "payload_bound": bound}
    if isinstance(value, list):
        if len(value) > max_batch:
            return _too_many(len(value), max_batch)
        return _decode_batch(value, context, sizes)
    if not isinstance(value, dict):
        return _reject(
            NOT_AN_EVENT, f"a frame must be a map or an array of maps, not {_kind(value)}"
        )
    outcome = _validate(value, context)
    if isinstance(outcome, Event):
        return DecodedFrame(events=[outcome], rejections=[])
    return _reject(*outcome)
