"""Bytes <-> values: msgpack (and JSON) ingest frames to events, and RPC value packing.

``decode_frame`` turns one ingest frame into validated events plus the reasons
anything in it was refused; it never raises. ``pack``/``unpack`` are the
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
from marmot.engine.models.events import Event, EventLimits

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "DecodedFrame",
    "Rejection",
    "decode_frame",
    "encode_event",
    "encode_events",
    "pack",
    "unpack",
]

DEFAULT_MAX_FRAME_BYTES: Final = 1_048_576
DEFAULT_MAX_BATCH: Final = 10_000
# Accepted events are re-packed for the actors (msgpack refuses nesting past
# 511 levels) and stored as JSON, so a payload deeper than this is refused here.
MAX_PAYLOAD_DEPTH: Final = 100

# Rejection reasons: stable strings, used as a Prometheus label.
TOO_LARGE: Final = "too_large"
UNDECODABLE: Final = "undecodable"
NOT_AN_EVENT: Final = "not_an_event"
BATCH_TOO_LARGE: Final = "batch_too_large"
INVALID_EVENT: Final = "invalid_event"

_JSON_WHITESPACE: Final = b" \t\n\r"
_JSON_OPENERS: Final = (b"{", b"[")
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


def pack(value: Any) -> bytes:
    """Pack a value as msgpack for the RPC wire.

    Datetimes become msgpack timestamps (naive ones are taken as UTC), UUIDs
    strings, pydantic models their ``model_dump()``, sets and tuples arrays.
    Raises ``TypeError`` (or ``ValueError`` for nesting over 511 levels) when a
    value cannot be packed.
    """
    packed: bytes = msgpack.packb(value, default=_default, use_bin_type=True)
    return packed


def unpack(data: bytes) -> Any:
    """Unpack msgpack from ``pack``; timestamps come back as aware UTC datetimes.

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


def encode_event(event: Event) -> bytes:
    """One event as an ingest frame: a msgpack map, times as msgpack timestamps."""
    packed: bytes = msgpack.packb(_event_map(event), datetime=True, use_bin_type=True)
    return packed


def encode_events(events: Sequence[Event]) -> bytes:
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


def _load(data: bytes) -> Any:
    """The frame's one value; raises one of ``_DECODE_ERRORS`` if there is none."""
    if _is_json(data):
        return json.loads(data.decode("utf-8"))
    # unpackb bounds every declared length by len(data), so a lying header is
    # refused before anything is allocated; its C stack refuses deep nesting.
    return msgpack.unpackb(data, timestamp=3, raw=False, ext_hook=_refuse_extension)


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


def _describe_validation(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = [_describe_error(error) for error in errors[:_MAX_LISTED_ERRORS]]
    if len(errors) > _MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_LISTED_ERRORS} more")
    return "; ".join(parts)


def _validate(value: object, context: dict[str, Any]) -> Event | tuple[str, str]:
    """The event a value describes, or ``(reason, message)`` saying why it does not."""
    if not isinstance(value, dict):
        return NOT_AN_EVENT, f"an event must be a map, not {_kind(value)}"
    payload = value.get("payload")
    if payload and (type(payload) is dict or type(payload) is list):
        problem = _payload_problem(payload)
        if problem is not None:
            return INVALID_EVENT, problem
    try:
        return Event.model_validate(value, context=context)
    except ValidationError as exc:
        return INVALID_EVENT, _describe_validation(exc)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # e.g. a time whose offset puts it outside datetime's range once made UTC
        return INVALID_EVENT, f"out of range: {_error_text(exc)}"


def _reject(reason: str, message: str) -> DecodedFrame:
    return DecodedFrame(events=[], rejections=[Rejection(reason, message)])


def _decode_batch(items: list[Any], context: dict[str, Any]) -> DecodedFrame:
    events: list[Event] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        outcome = _validate(item, context)
        if isinstance(outcome, Event):
            events.append(outcome)
        else:
            reason, message = outcome
            rejections.append(Rejection(reason, f"event {index}: {message}", index))
    return DecodedFrame(events=events, rejections=rejections)


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
    even when others are rejected. ``received``, when given, is stamped on
    every event (SEMANTICS §1).
    """
    size = len(data)
    if size > max_frame_bytes:
        return _reject(TOO_LARGE, f"frame of {size} bytes is over the limit of {max_frame_bytes}")
    try:
        value = _load(bytes(data))
    except _DECODE_ERRORS as exc:
        return _reject(UNDECODABLE, f"not a msgpack or JSON value: {_error_text(exc)}")
    context: dict[str, Any] = {"received": received}
    if limits is not None:
        context["limits"] = limits
    if isinstance(value, list):
        if len(value) > max_batch:
            return _reject(
                BATCH_TOO_LARGE, f"batch of {len(value)} events is over the limit of {max_batch}"
            )
        return _decode_batch(value, context)
    if not isinstance(value, dict):
        return _reject(
            NOT_AN_EVENT, f"a frame must be a map or an array of maps, not {_kind(value)}"
        )
    outcome = _validate(value, context)
    if isinstance(outcome, Event):
        return DecodedFrame(events=[outcome], rejections=[])
    return _reject(*outcome)
