"""Reading RPC request frames without building what is not needed yet.

``read_header`` reads a request's ``id``, ``method`` and ``token`` and skips the
rest (``params``) without building it, so the server can refuse a frame before
paying for it; ``decode_in_steps`` then decodes a big frame a value at a time,
so that a worker thread doing it leaves the event loop room to run. Both read
msgpack as ``codec.unpack_rpc`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack

from marmot.engine.errors import ValidationFailed

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "NOT_A_MAP",
    "UNDECODABLE",
    "Header",
    "Unreadable",
    "decode_in_steps",
    "read_header",
]

# Ample for a thousand events per call (the CLI's chunk) and any automation,
# and it bounds what one frame can make the server allocate: unpacking may
# grow a frame ~70x (a one-byte empty map becomes a Python dict). Here, where
# clients read it too without importing the server.
DEFAULT_MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024

# Why a frame cannot be answered (marmot_rpc_requests_dropped's reason label).
UNDECODABLE: Final = "undecodable"
NOT_A_MAP: Final = "not_a_map"
# What reading untrusted msgpack may raise (see codec.unpack_rpc); IndexError:
# a frame that ends where a value should start.
_DECODE_ERRORS: Final = (
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    IndexError,
    msgpack.UnpackException,
)

# msgpack's type bytes: maps, arrays, and the short strings keys like "id" use.
_MAPS: Final = frozenset({*range(0x80, 0x90), 0xDE, 0xDF})
_CONTAINERS: Final = _MAPS | {*range(0x90, 0xA0), 0xDC, 0xDD}
_SHORT_STRINGS: Final = range(0xA0, 0xC0)
_HEADER_KEYS: Final = frozenset({"id", "method", "token"})
# Map and array levels decoded a value at a time: request, params, params' values.
_STEPPED_LEVELS: Final = 3
# Stands for a container read where a scalar belongs: never an id, method or token.
_CONTAINER: Final = object()


class Unreadable(Exception):
    """Raised for a request frame that gets no answer; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Header:
    """What the server reads of a request before decoding it."""

    id: str | int | None
    method: Any = None
    token: Any = None


def _usable_id(request_id: Any) -> str | int | None:
    """The id a reply can echo, or None when it is no usable one."""
    if isinstance(request_id, str | int) and not isinstance(request_id, bool):
        return request_id
    return None


def _unpacker(body: bytes) -> msgpack.Unpacker:
    # The options of codec.unpack_rpc, for a frame fed whole.
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, timestamp=3, max_buffer_size=max(len(body), 1)
    )
    unpacker.feed(body)
    return unpacker


def read_header(body: bytes, *, needs_token: bool) -> Header:
    """A request's ``id``, ``method`` and (``needs_token``) ``token``, read without
    building anything else: other values (``params``) are skipped, as are
    containers where those should be scalars, and reading stops once they are
    found (the full decode checks the rest). Raises ``Unreadable`` for a frame
    that is not a msgpack map."""
    unpacker = _unpacker(body)
    wanted = _HEADER_KEYS if needs_token else _HEADER_KEYS - {"token"}
    try:
        if body[0] not in _MAPS:
            unpacker.skip()
            raise Unreadable(NOT_A_MAP if unpacker.tell() == len(body) else UNDECODABLE)
        found: dict[str, Any] = {}
        for _ in range(unpacker.read_map_header()):
            if len(found) == len(wanted):
                break
            # Only a short string can be one of the keys read: anything else is skipped.
            key = unpacker.unpack() if body[unpacker.tell()] in _SHORT_STRINGS else None
            if key not in _HEADER_KEYS:
                if key is None:
                    unpacker.skip()
                unpacker.skip()
            elif key in found or key not in wanted:
                unpacker.skip()  # a repeated key: the first one counts
            elif body[unpacker.tell()] in _CONTAINERS:
                unpacker.skip()
                found[key] = _CONTAINER
            else:
                found[key] = unpacker.unpack()
        else:
            if unpacker.tell() != len(body):
                raise Unreadable(UNDECODABLE)
    except _DECODE_ERRORS:
        raise Unreadable(UNDECODABLE) from None
    return Header(_usable_id(found.get("id")), found.get("method"), found.get("token"))


def decode_in_steps(body: bytes) -> Any:
    """``codec.unpack_rpc(body)``, built one value at a time in the top levels.

    msgpack holds the GIL for the whole of one call: a thread that decoded a
    big frame in one call would stop the event loop as surely as decoding on
    it. Each step here is a short call (one event of an ``events.emit``, say),
    so the loop runs between them. Raises ``ValidationFailed`` as unpack_rpc does.
    """
    unpacker = _unpacker(body)
    try:
        value = _unpack_value(unpacker, body, _STEPPED_LEVELS)
    except _DECODE_ERRORS as exc:
        raise ValidationFailed(f"undecodable msgpack: {type(exc).__name__}") from None
    if unpacker.tell() != len(body):
        raise ValidationFailed("undecodable msgpack: extra data")
    return value


def _unpack_value(unpacker: msgpack.Unpacker, body: bytes, levels: int) -> Any:
    kind = body[unpacker.tell()]
    if levels == 0 or kind not in _CONTAINERS:
        return unpacker.unpack()
    if kind in _MAPS:
        return {
            unpacker.unpack(): _unpack_value(unpacker, body, levels - 1)
            for _ in range(unpacker.read_map_header())
        }
    return [_unpack_value(unpacker, body, levels - 1) for _ in range(unpacker.read_array_header())]
