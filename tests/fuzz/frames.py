"""Hostile ingest frames for the fuzz tests, from a seeded ``random.Random``.

``FrameMaker(seed)`` makes frames of every kind the ingest path must survive:
random bytes, truncated or bit-flipped msgpack, wrongly typed fields, huge
strings, deep nesting, bad timestamps, invalid UTF-8, extension types, NaN,
oversized batches, hostile JSON, and good events (alone or inside batches of
bad ones) whose decoding is known exactly.
"""

from __future__ import annotations

import json
import math
import random
import string
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgpack

from marmot.engine.models.events import RESOURCE_ID, RESOURCE_ROLE

FIELDS = ("id", "occurred", "event", "resource", "related", "payload", "follows", "received")
_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_TEXT = string.ascii_letters + string.digits + "._-:/ éß漢字🙂"
_POOL = 1024  # texts and payload values drawn up front (drawing each is slow)
_INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\x80",
)


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes spliced into a msgpack value as they are: what msgpack would not write."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame and what it must decode to.

    ``good`` pairs each good event with its batch index (None: the frame is
    that one event); ``count`` is the batch's length (None: not a batch);
    ``reason`` is the one rejection the whole frame must get, when known.
    """

    kind: str
    data: bytes
    good: tuple[tuple[int | None, dict[str, Any]], ...] = ()
    count: int | None = None
    reason: str | None = None


def packb(value: Any) -> bytes:
    """msgpack as publishers write it (aware datetimes as timestamps)."""
    packed: bytes = msgpack.packb(value, datetime=True, use_bin_type=True)
    return packed


def _header(size: int, small: int, tag16: int) -> bytes:
    if size < 16:
        return bytes([small | size])
    if size < 1 << 16:
        return bytes([tag16]) + size.to_bytes(2, "big")
    return bytes([tag16 + 1]) + size.to_bytes(4, "big")


def encode(value: Any) -> bytes:
    """``value`` as msgpack, with every ``Raw`` inside it written verbatim."""
    if isinstance(value, Raw):
        return value.data
    try:
        return packb(value)
    except TypeError:  # a Raw somewhere inside, which msgpack cannot write
        pass
    if isinstance(value, dict):
        body = b"".join(encode(k) + encode(v) for k, v in value.items())
        return _header(len(value), 0x80, 0xDE) + body
    return _header(len(value), 0x90, 0xDC) + b"".join(encode(v) for v in value)


def as_json_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A good event document with its times as RFC 3339 strings (for JSON frames)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in doc.items()}


def _no_extension(code: int, data: bytes) -> Any:
    raise ValueError(f"extension type {code}")


def _nested_list(depth: int, leaf: Any = None) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class FrameMaker:
    """Makes frames from a seed; the same seed makes the same frames."""

    seed: int
    max_frame_bytes: int = 1_048_576
    max_batch: int = 10_000
    max_payload_bytes: int = 262_144
    good_name: Callable[[int], str] = field(default=lambda n: f"fuzz.good.{n % 7}")
    now: datetime = _NOW
    spread: timedelta = timedelta(days=10)  # good events occur within this of ``now``
    rng: random.Random = field(init=False)
    serial: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        rng = self.rng
        self._texts = ["".join(rng.choices(_TEXT, k=rng.randint(1, 12))) for _ in range(_POOL)]
        self._values = [self.json_value() for _ in range(_POOL)]
        self._templates = [self.good_doc() for _ in range(_POOL // 4)]

    # ------------------------------------------------------------ values

    def text(self, low: int = 0, high: int = 12) -> str:
        """A short text (one of a pool), cut to at most ``high`` characters."""
        if low == 0 and self.rng.random() < 0.1:
            return ""
        return self.rng.choice(self._texts)[:high]

    def json_value(self, depth: int = 0) -> Any:
        """A value every edge accepts in a payload, and that survives JSON unchanged."""
        rng = self.rng
        roll = rng.random()
        if depth < 3 and roll < 0.15:
            return [self.json_value(depth + 1) for _ in range(rng.randint(0, 4))]
        if depth < 3 and roll < 0.3:
            return {self.text(0, 8): self.json_value(depth + 1) for _ in range(rng.randint(0, 4))}
        scalars: list[Callable[[], Any]] = [
            lambda: None,
            lambda: rng.random() < 0.5,
            lambda: rng.randint(-(2**63), 2**63 - 1),
            lambda: rng.randint(-1000, 1000),
            lambda: rng.uniform(-1e9, 1e9),
            lambda: self.text(),
        ]
        return rng.choice(scalars)()

    def good_doc(self, name: str | None = None) -> dict[str, Any]:
        """A valid event document, with ``occurred`` as an aware datetime."""
        rng = self.rng
        self.serial += 1
        n = self.serial
        texts, values = self._texts, self._values
        labels = {rng.choice(texts): rng.choice(texts) for _ in range(rng.randint(0, 3))}
        labels[RESOURCE_ID] = f"fuzz.resource.{self.seed}.{n}"  # unique: each fires once
        related = [
            {RESOURCE_ID: f"fuzz.related.{rng.choice(texts)}", RESOURCE_ROLE: rng.choice(texts)}
            for _ in range(rng.randint(0, 2))
        ]
        doc: dict[str, Any] = {
            "id": str(UUID(int=rng.getrandbits(128), version=4)),
            "occurred": self.now + rng.uniform(-1, 1) * self.spread,
            "event": name or self.good_name(n),
            "resource": labels,
            "related": related,
            "payload": {rng.choice(texts): rng.choice(values) for _ in range(rng.randint(0, 5))},
        }
        if rng.random() < 0.1:
            doc["follows"] = None
        return doc

    def template(self, name: str) -> dict[str, Any]:
        """A valid document to break, cheaper than ``good_doc``: ids repeat across calls."""
        doc = dict(self.rng.choice(self._templates))
        doc["event"] = name
        doc["resource"] = dict(doc["resource"])
        return doc

    def hostile_value(self) -> Any:
        """A value that is wrong in (almost) any event field."""
        rng = self.rng
        options: list[Callable[[], Any]] = [
            lambda: None,
            lambda: True,
            lambda: rng.choice([0, -1, 2**64 - 1, -(2**63), 7]),
            lambda: rng.choice([math.nan, math.inf, -math.inf, -0.0, 1e308]),
            lambda: "",
            lambda: "x" * rng.choice([1025, 5000]),
            lambda: rng.randbytes(rng.randint(0, 8)),
            lambda: [],
            lambda: [self.text(), 1, None],
            lambda: {},
            lambda: {"k": [1, {"x": None}]},
            lambda: msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randint(0, 6))),
            lambda: msgpack.Timestamp(rng.randint(-(2**40), 2**40), rng.randrange(10**9)),
            lambda: Raw(bytes([0xA0 | 2]) + rng.choice(_INVALID_UTF8)[:2].ljust(2, b"\xff")),
            lambda: Raw(b"\xd6\xff" + rng.randbytes(4)),
            lambda: _nested_list(rng.randint(5, 60)),
        ]
        return rng.choice(options)()

    # ------------------------------------------------------------ frames

    def good(self) -> Frame:
        """One good event, as msgpack or JSON."""
        doc = self.good_doc()
        if self.rng.random() < 0.3:
            return Frame("good-json", json.dumps(as_json_doc(doc)).encode(), ((None, doc),))
        return Frame("good", packb(doc), ((None, doc),))

    def mixed_batch(self) -> Frame:
        """A batch of good events with hostile elements between them."""
        rng = self.rng
        items: list[Any] = []
        good: list[tuple[int | None, dict[str, Any]]] = []
        for index in range(rng.randint(1, 12)):
            if rng.random() < 0.5:
                doc = self.good_doc()
                good.append((index, doc))
                items.append(doc)
            else:
                items.append(self._decodable_broken_doc())
        return Frame("mixed-batch", encode(items), tuple(good), count=len(items))

    def random_bytes(self) -> Frame:
        """Random bytes, some after a byte that opens JSON or a msgpack container."""
        rng = self.rng
        size = rng.choice([0, 1, 2, 3, rng.randint(4, 64), rng.randint(64, 2048)])
        prefix = rng.choice([b"", b"", b"{", b"[", b"\x81", b"\x91", b"\xdd", b"\xc1", b" ["])
        return Frame("random-bytes", prefix + rng.randbytes(size))

    def truncated(self) -> Frame:
        """A good event or batch cut short: never a complete value, so undecodable."""
        rng = self.rng
        if rng.random() < 0.5:
            data = packb(self.template("fuzz.truncated"))
        else:
            data = packb([self.template("fuzz.truncated") for _ in range(rng.randint(1, 5))])
        if rng.random() < 0.3:
            data = json.dumps(as_json_doc(self.template("fuzz.truncated"))).encode()
        return Frame("truncated", data[: rng.randint(1, len(data) - 1)], reason="undecodable")

    def bit_flipped(self) -> Frame:
        """A good event with a few bits flipped: anything may come of it."""
        data = bytearray(packb(self.template("fuzz.flipped")))
        for _ in range(self.rng.randint(1, 4)):
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        return Frame("bit-flipped", bytes(data))

    def _broken_doc(self) -> Any:
        """A good document with one field (or nested part) made wrong, or a non-map."""
        rng = self.rng
        doc: dict[str, Any] = self.template("fuzz.broken")
        where = rng.randrange(len(FIELDS) + 5)
        if where < len(FIELDS):
            doc[FIELDS[where]] = self.hostile_value()
        elif where == len(FIELDS):
            doc["resource"][self.text(1, 5)] = self.hostile_value()
        elif where == len(FIELDS) + 1:
            doc["related"] = [self.hostile_value()]
        elif where == len(FIELDS) + 2:
            doc[self.text(1, 6) + "_unknown"] = self.text()
        elif where == len(FIELDS) + 3:
            del doc[rng.choice(["occurred", "event", "resource"])]
        else:
            return self.hostile_value()
        return doc

    def _decodable_broken_doc(self) -> Any:
        """A broken element that does not make its whole batch undecodable."""
        while True:
            value = self._broken_doc()
            try:
                msgpack.unpackb(encode(value), timestamp=3, raw=False, ext_hook=_no_extension)
            except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
                continue
            return value

    def wrong_type(self) -> Frame:
        """An event with one field wrong, or a value that is no event at all."""
        return Frame("wrong-type", encode(self._broken_doc()))

    def huge_strings(self) -> Frame:
        """Over-long names and labels, payloads over the limit, frames over theirs."""
        rng = self.rng
        doc = self.template("fuzz.huge")
        choice = rng.randrange(5)
        if choice == 0:
            doc["event"] = "e" * rng.choice([1025, 100_000])
        elif choice == 1:
            doc["resource"]["big"] = "v" * rng.choice([10_000, 300_000])
        elif choice == 2:
            doc["payload"] = {"blob": "p" * (self.max_payload_bytes + rng.randint(1, 1000))}
        elif choice == 3:
            doc["payload"] = {"many": ["\x01" * 40] * 2000}  # 6x as JSON: over the limit
        else:
            size = self.max_frame_bytes + rng.randint(1, 64)
            return Frame("huge-strings", b"\x81\xa1x" + bytes(size), reason="too_large")
        return Frame("huge-strings", encode(doc))

    def deep(self) -> Frame:
        """Nesting from fine to far past every decoder's stack, in msgpack and JSON."""
        rng = self.rng
        depth = rng.choice([50, 99, 100, 101, 300, 600, 1100, 5000])
        choice = rng.randrange(4)
        if choice == 0:
            data = b"\x91" * depth + b"\xc0"
        elif choice == 1:
            doc = self.template("fuzz.deep")
            doc["payload"] = {"d": Raw(b"\x81\xa1a" * depth + b"\x80")}
            data = encode(doc)
        elif choice == 2:
            data = b"[" * depth + b"]" * depth
        else:
            inner = "[" * depth + "1" + "]" * depth
            good = json.dumps(as_json_doc(self.template("fuzz.deep")))
            data = good.replace('"payload": {', '"payload": {"d": ' + inner + ", ", 1).encode()
        return Frame("deep", data)

    def bad_timestamp(self) -> Frame:
        """``occurred`` as no time, an impossible one, or a broken msgpack timestamp."""
        rng = self.rng
        doc = self.template("fuzz.badtime")
        doc["occurred"] = rng.choice(
            [
                "",
                "yesterday",
                "2024-13-45T00:00:00Z",
                "2024-02-30T25:61:61Z",
                "0000-01-01T00:00:00Z",
                "0001-01-01T00:00:00+01:00",
                "9999-12-31T23:59:59-01:00",
                "10000-01-01T00:00:00Z",
                "2024-01-01T00:00:00+99:99",
                "2024-01-01T00:00:00" + "9" * 5000,
                math.nan,
                math.inf,
                -1e300,
                2**63 - 1,
                Raw(b"\xd7\xff" + struct.pack(">Q", (10**9 + 7) << 34)),  # nanoseconds > 1e9
                Raw(b"\xc7\x0c\xff" + struct.pack(">Iq", 0, 2**62)),  # year ~1.5e11
                Raw(b"\xc7\x0c\xff" + struct.pack(">Iq", 0, -(2**62))),
                Raw(b"\xc7\x05\xff" + rng.randbytes(5)),  # no timestamp is 5 bytes
                Raw(b"\xd4\xff\x00"),
                Raw(b"\xd5\xff\x00\x00"),
            ]
        )
        return Frame("bad-timestamp", encode(doc))

    def non_utf8(self) -> Frame:
        """A string of invalid UTF-8 in a name, label, payload key or JSON text."""
        rng = self.rng
        bad = rng.choice(_INVALID_UTF8)
        raw = Raw(bytes([0xA0 | len(bad)]) + bad)  # a str of invalid UTF-8
        doc: dict[Any, Any] = self.template("fuzz.utf8")
        choice = rng.randrange(5)
        if choice == 0:
            doc["event"] = raw
        elif choice == 1:
            doc["resource"] = {RESOURCE_ID: raw}
        elif choice == 2:
            doc["payload"] = {"s": raw}
        elif choice == 3:
            doc[raw] = "x"
        else:
            text = json.dumps(as_json_doc(doc)).encode()
            data = text.replace(b'"payload": {', b'"payload": {"' + bad + b'": 1, ')
            return Frame("non-utf8", data, reason="undecodable")
        return Frame("non-utf8", encode(doc), reason="undecodable")

    def ext_type(self) -> Frame:
        """A msgpack extension type other than the timestamp, somewhere in the frame."""
        rng = self.rng
        ext = msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randint(0, 16)))
        doc = self.template("fuzz.ext")
        target = rng.randrange(3)
        if target == 0:
            doc["payload"] = {"ext": ext}
        elif target == 1:
            doc["resource"]["ext"] = ext
        else:
            return Frame("ext-type", packb(ext), reason="undecodable")
        return Frame("ext-type", packb(doc), reason="undecodable")

    def not_a_number(self) -> Frame:
        """NaN and infinities: fine in a payload, wrong anywhere else."""
        rng = self.rng
        value = rng.choice([math.nan, math.inf, -math.inf])
        doc = self.template("fuzz.nan")
        where = rng.choice(["payload", "payload", "event", "id", "related"])
        if where == "payload":
            doc["payload"] = {"x": value, "list": [value, 1.0]}
        else:
            doc[where] = value
        if rng.random() < 0.3:
            text = json.dumps(as_json_doc(doc)).encode()  # NaN, Infinity: not JSON, but Python's
            return Frame("nan", text)
        return Frame("nan", packb(doc))

    def oversized_batch(self) -> Frame:
        """A batch one to fifty events over ``max_batch``."""
        rng = self.rng
        count = self.max_batch + rng.randint(1, 50)
        if rng.random() < 0.5:
            return Frame("oversized-batch", packb([None] * count), reason="batch_too_large")
        if rng.random() < 0.5:
            return Frame("oversized-batch", packb([{}] * count), reason="batch_too_large")
        return Frame("oversized-batch", json.dumps([{}] * count).encode(), reason="batch_too_large")

    def random_msgpack(self) -> Frame:
        """A well-formed msgpack value of any shape."""
        rng = self.rng
        value: Any = self.hostile_value()
        if rng.random() < 0.5:
            value = [self.hostile_value() for _ in range(rng.randint(0, 6))]
        elif rng.random() < 0.5:
            value = {self.text(0, 6): self.hostile_value() for _ in range(rng.randint(0, 6))}
        return Frame("random-msgpack", encode(value))

    def hostile_json(self) -> Frame:
        """JSON no actor could take (or that is fine after all), named as good events are."""
        rng = self.rng
        doc = as_json_doc(self.good_doc())
        good = json.dumps(doc)
        payload_at = '"payload": {'
        inserts = [
            '"s": "\\ud800", ',  # a lone surrogate
            '"s": "\\udfff\\ud800", ',
            '"n": 18446744073709551616, ',  # one past msgpack's largest integer
            '"n": -9223372036854775809, ',
            '"n": ' + "9" * 5000 + ", ",  # past Python's digit limit
            '"f": 1e999, ',
            '"a": NaN, ',
            '"k": "\\u0000", ',
        ]
        choice = rng.randrange(len(inserts) + 4)
        if choice < len(inserts):
            text = good.replace(payload_at, payload_at + inserts[choice], 1)
        elif choice == len(inserts):
            text = "\ufeff" + good  # a byte-order mark: not JSON, not msgpack
        elif choice == len(inserts) + 1:
            text = good + " trailing"
        elif choice == len(inserts) + 2:
            text = "  \n" + good + "\n"  # whitespace around is fine
        else:
            text = good.replace('"event": ', '"event": 1, "event": ', 1)  # duplicate key
        return Frame("hostile-json", text.encode())

    # ------------------------------------------------------------ mixes

    def hostile(self) -> Frame:
        """One hostile frame, its kind drawn with fixed weights."""
        makers: tuple[tuple[Callable[[], Frame], int], ...] = (
            (self.random_bytes, 20),
            (self.truncated, 10),
            (self.bit_flipped, 10),
            (self.wrong_type, 22),
            (self.huge_strings, 1),
            (self.deep, 2),
            (self.bad_timestamp, 8),
            (self.non_utf8, 5),
            (self.ext_type, 5),
            (self.not_a_number, 4),
            (self.oversized_batch, 1),
            (self.random_msgpack, 7),
            (self.hostile_json, 5),
        )
        make: Callable[[], Frame] = self.rng.choices(
            [maker for maker, _ in makers], [weight for _, weight in makers]
        )[0]
        return make()

    def stream(self, count: int, good_every: int = 20) -> list[Frame]:
        """``count`` frames: hostile ones, with a good event or mixed batch interleaved."""
        frames: list[Frame] = []
        for index in range(count):
            if index % good_every == 0:
                frames.append(self.mixed_batch() if self.rng.random() < 0.3 else self.good())
            else:
                frames.append(self.hostile())
        return frames
