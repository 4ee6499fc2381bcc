"""An event's time and payload fields, read from bytes as the ``Event`` model reads them.

The fast path (event_decoder.py) keeps ``occurred`` and ``payload`` as raw
bytes and reads them here, a whole frame's at once: the times, then the
payloads, are each decoded by one C call over the joined bytes, and a
payload is walked in Python only when its bytes do not rule out what the
walk looks for. Reading them one by one in Python cost more than decoding
the rest of the event (bench/validation.py).

What cannot be read as the model reads it raises ``Unusual`` (or one of
``READ_ERRORS``), or comes back as None: the model then judges that event.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

import msgpack
import msgspec
from pydantic_core import to_json

from marmot.engine.models.events import (
    MAX_PAYLOAD_DEPTH,
    OCCURRED_END,
    OCCURRED_START,
    EventLimits,
)

__all__ = [
    "READ_ERRORS",
    "Unusual",
    "read_json_time",
    "read_msgpack_time",
    "read_payloads",
    "read_times",
    "refuse_extension",
]

# No byte of msgpack or JSON becomes more than 6 bytes of JSON (codec.py).
_JSON_GROWTH: Final = 6
_MAX_UNMEASURED: Final = 2**62
# The codec re-packs payloads as msgpack, which carries 64-bit integers only.
_MIN_INT: Final = -(2**63)
_MAX_INT: Final = 2**64 - 1
_JSON_PAYLOAD: Final = msgspec.json.Decoder(dict[str, Any])
_JSON_TIME: Final = msgspec.json.Decoder(datetime)
# msgspec rounds fractional seconds past microseconds; pydantic truncates them.
_SUB_MICROSECONDS: Final = re.compile(rb"\.[0-9]{7}")
_MSGPACK_TIME: Final = msgspec.msgpack.Decoder(datetime)
# A frame's times, or its payloads, joined into one array (see read_times, read_payloads).
_JSON_TIMES: Final = msgspec.json.Decoder(list[datetime])
_JSON_PAYLOADS: Final = msgspec.json.Decoder(list[dict[str, Any]])
# Integers long enough to pass 64 bits, in JSON (see read_payloads).
_LONG_DIGITS: Final = re.compile(rb"[0-9]{19}")
# Every byte but those that open a container (deleted, the openers are counted).
_JSON_NOT_HEADERS: Final = bytes(b for b in range(256) if b not in b"[{")
_MSGPACK_NOT_HEADERS: Final = bytes(
    b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF)
)


class Unusual(Exception):
    """The frame holds something the fast path leaves to the model."""


def refuse_extension(code: int, data: bytes) -> Any:
    # msgpack-python's hook: the timestamp extension is decoded as the codec
    # decodes it; any other leaves the event to the model.
    raise Unusual


READ_ERRORS: Final = (
    Unusual,
    msgspec.DecodeError,
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise Unusual  # naive: the model takes it as UTC
    if value.tzinfo is not UTC:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise Unusual from None
    return value


def _text_time(
    raw: bytes, decoder: msgspec.json.Decoder[datetime] | msgspec.msgpack.Decoder[datetime]
) -> datetime:
    """RFC 3339 text read by msgspec, but only with at most 6 fractional digits."""
    if _SUB_MICROSECONDS.search(raw) is not None:
        raise Unusual
    return _as_utc(decoder.decode(raw))


def read_msgpack_time(raw: bytes) -> datetime:
    """A msgpack timestamp (ext -1) as the model's way reads it (msgpack-python:
    nanoseconds cut to microseconds, where msgspec would round them), or text as
    in JSON."""
    value = msgpack.unpackb(raw, timestamp=3, raw=False, ext_hook=refuse_extension)
    if type(value) is datetime:
        return value
    if type(value) is str:
        return _text_time(raw, _MSGPACK_TIME)
    raise Unusual


def read_json_time(raw: bytes) -> datetime:
    """RFC 3339 text from a JSON string."""
    return _text_time(raw, _JSON_TIME)


def _check_payload(value: dict[Any, Any] | list[Any], depth: int = 1) -> None:
    """What ``Event`` checks of a payload at an edge, plus the codec's integer range."""
    if depth > MAX_PAYLOAD_DEPTH:
        raise Unusual
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                raise Unusual
        children: Any = value.values()
    else:
        children = value
    for child in children:
        kind = type(child)
        if kind is dict or kind is list:
            _check_payload(child, depth + 1)
        elif kind is int:
            if child < _MIN_INT or child > _MAX_INT:
                raise Unusual
        elif kind is bytes:
            raise Unusual


def _array(raws: list[msgspec.Raw], is_json: bool) -> bytes:
    """Encoded values joined into one array, so one C call decodes them all."""
    if is_json:
        return b"[" + b",".join(raws) + b"]"
    count = len(raws)
    if count < 16:
        head = bytes((0x90 | count,))
    elif count < 0x10000:
        head = b"\xdc" + count.to_bytes(2, "big")
    else:
        head = b"\xdd" + count.to_bytes(4, "big")
    return head + b"".join(raws)


def _one_time(raw: msgspec.Raw, is_json: bool) -> datetime | None:
    """An ``occurred`` read alone, or None when the model must judge it."""
    try:
        value = (read_json_time if is_json else read_msgpack_time)(bytes(raw))
    except READ_ERRORS:
        return None
    return value if OCCURRED_START <= value < OCCURRED_END else None


def read_times(raws: list[msgspec.Raw], is_json: bool) -> list[datetime | None]:
    """Each event's ``occurred`` as the model reads it, None where the model must judge.

    All of a frame's times are decoded by one call: a msgpack timestamp by
    msgpack-python as the model's way reads it (cut to microseconds), RFC 3339
    text by msgspec when no time has over 6 fractional digits. Reading them
    one by one in Python cost more than decoding the rest of the event.
    """
    if len(raws) == 1:
        return [_one_time(raws[0], is_json)]
    joined = _array(raws, is_json)
    values: list[Any] | None = None
    try:
        if not is_json:
            values = msgpack.unpackb(joined, timestamp=3, raw=False, ext_hook=refuse_extension)
        elif _SUB_MICROSECONDS.search(joined) is None:
            values = _JSON_TIMES.decode(joined)
    except READ_ERRORS:
        values = None  # one of them is unusual: each is read alone
    if values is None:
        return [_one_time(raw, is_json) for raw in raws]
    times: list[datetime | None] = []
    for raw, value in zip(raws, values, strict=True):
        if type(value) is datetime:
            zone = value.tzinfo
            if zone is not UTC:
                if zone is None:
                    times.append(None)  # naive: the model takes it as UTC
                    continue
                try:
                    value = value.astimezone(UTC)
                except OverflowError:
                    times.append(None)
                    continue
            times.append(value if OCCURRED_START <= value < OCCURRED_END else None)
        elif type(value) is str and not is_json:
            times.append(_one_time(raw, is_json))  # text in a msgpack frame
        else:
            times.append(None)
    return times


def _one_payload(
    raw: msgspec.Raw | bytes, is_json: bool, limits: EventLimits
) -> dict[str, Any] | None:
    """A payload decoded and checked alone (one event, or a frame whose payloads
    could not be read together), as ``read_payloads`` checks them; None when the
    model must judge it."""
    if not raw:
        return {}
    raw = bytes(raw)
    try:
        if is_json:
            payload = _JSON_PAYLOAD.decode(raw)
            suspect = _LONG_DIGITS.search(raw) is not None
        else:
            payload = msgpack.unpackb(raw, timestamp=3, raw=False, ext_hook=refuse_extension)
            if type(payload) is not dict:
                return None
            suspect = b"\xc4" in raw or b"\xc5" in raw or b"\xc6" in raw
        if payload:
            if suspect or _may_be_too_deep(raw, is_json):
                _check_payload(payload)
            _check_payload_size(payload, raw, limits)
    except READ_ERRORS:
        return None
    return payload


def _may_be_too_deep(raw: msgspec.Raw | bytes, is_json: bool) -> bool:
    """Whether a payload's bytes leave room for more than ``MAX_PAYLOAD_DEPTH`` levels:
    each level opens a container, so its header bytes bound the depth."""
    if len(raw) <= MAX_PAYLOAD_DEPTH:
        return False
    headers = _JSON_NOT_HEADERS if is_json else _MSGPACK_NOT_HEADERS
    return len(bytes(raw).translate(None, headers)) > MAX_PAYLOAD_DEPTH


def _check_payload_size(
    payload: dict[str, Any], raw: msgspec.Raw | bytes, limits: EventLimits
) -> None:
    limit = limits.max_payload_bytes
    # No byte of msgpack or JSON becomes more than 6 bytes of JSON (codec.py).
    if limit is not None and _JSON_GROWTH * len(raw) + 2 > limit:
        try:
            size = len(to_json(payload, inf_nan_mode="null"))
        except ValueError:
            raise Unusual from None
        if size > limit:
            raise Unusual


def read_payloads(
    raws: list[msgspec.Raw], is_json: bool, limits: EventLimits
) -> list[dict[str, Any] | None]:
    """Each event's payload, checked as ``Event`` checks one at an edge; None where
    the model must judge it.

    The payloads given are decoded by one call, and checked in Python only when
    their bytes do not rule out what the check looks for: fewer container
    headers than ``MAX_PAYLOAD_DEPTH`` bound the depth; a msgpack payload without
    a byte that starts binary data holds none (its map keys are then strings:
    msgpack-python refuses others); a JSON payload without 19 digits in a row
    has no integer outside 64 bits.
    """
    if len(raws) == 1:
        return [_one_payload(raws[0], is_json, limits)]
    given = [raw for raw in raws if raw]
    values: list[Any] | None = None
    suspect = False
    if given:
        joined = _array(given, is_json)
        try:
            if is_json:
                values = _JSON_PAYLOADS.decode(joined)
                suspect = _LONG_DIGITS.search(joined) is not None
            else:
                values = msgpack.unpackb(joined, timestamp=3, raw=False, ext_hook=refuse_extension)
                # Binary headers (also lead bytes of some UTF-8 letters: a closer look).
                suspect = b"\xc4" in joined or b"\xc5" in joined or b"\xc6" in joined
        except READ_ERRORS:
            values = None
        if values is None:
            return [_one_payload(raw, is_json, limits) for raw in raws]
    decoded = values or []
    limit = limits.max_payload_bytes
    # A payload of at most this many bytes is at most ``limit`` bytes as JSON.
    unmeasured = _MAX_UNMEASURED if limit is None else (limit - 2) // _JSON_GROWTH
    payloads: list[dict[str, Any] | None] = []
    taken = 0
    for raw in raws:
        if not raw:
            payloads.append({})
            continue
        payload = decoded[taken]
        taken += 1
        if type(payload) is not dict:
            payloads.append(None)
            continue
        if payload:
            size = len(raw)
            try:
                if suspect or (size > MAX_PAYLOAD_DEPTH and _may_be_too_deep(raw, is_json)):
                    _check_payload(payload)
                if size > unmeasured:
                    _check_payload_size(payload, raw, limits)
            except READ_ERRORS:
                payloads.append(None)
                continue
        payloads.append(payload)
    return payloads
