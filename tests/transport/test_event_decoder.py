"""The fast decoding path accepts only what the Event model accepts, with the same values.

Every frame is decoded both ways: by ``decode_frame`` (fast path first) and by
the model alone (``_decode_with_model``, the codec before the fast path). The
outcomes must be equal, events and rejections, for good and hostile frames
alike (tests/fuzz/frames.py), and for the cases where msgspec and pydantic
read a value differently.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from uuid import uuid4

import msgpack
import pytest

from marmot.engine.models.events import Event, EventLimits
from marmot.transport import codec
from marmot.transport.codec import DecodedFrame, decode_frame
from marmot.transport.event_decoder import fast_event_line, fast_events
from tests.fuzz.frames import FrameMaker

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
LIMITS = EventLimits(max_labels=20, max_related=10, max_payload_bytes=2_000)


def by_model(data: bytes, limits: EventLimits, received: datetime | None) -> DecodedFrame:
    """``decode_frame`` as it was before the fast path: the model judges every event
    (batches too: their elements would otherwise be split the fast way)."""
    with (
        mock.patch.object(codec, "fast_events", return_value=None),
        mock.patch.object(codec, "fast_elements", return_value=None),
    ):
        return decode_frame(data, limits=limits, received=received)


def dumped(frame: DecodedFrame, with_id: bool) -> str:
    # repr: a NaN in a payload is equal to itself only so.
    return repr([e.model_dump(exclude=None if with_id else {"id"}) for e in frame.events])


def assert_same(
    data: bytes, limits: EventLimits, received: datetime | None, with_id: bool = True
) -> DecodedFrame:
    decoded = decode_frame(data, limits=limits, received=received)
    expected = by_model(data, limits, received)
    assert dumped(decoded, with_id) == dumped(expected, with_id)
    assert decoded.rejections == expected.rejections
    return decoded


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": str(uuid4()),
        "occurred": "2026-01-02T03:04:05.123456Z",
        "event": "prefect.flow-run.Completed",
        "resource": {"prefect.resource.id": "prefect.flow-run.1", "prefect.resource.name": "a"},
        "related": [{"prefect.resource.id": "prefect.flow.2", "prefect.resource.role": "flow"}],
        "payload": {"intended": {"from": "RUNNING", "to": "COMPLETED"}, "n": [1, 2.5, None]},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("received", [None, RECEIVED])
def test_hostile_and_good_frames_decode_as_the_model_decodes_them(
    seed: int, received: datetime | None
) -> None:
    maker = FrameMaker(seed=seed, max_payload_bytes=LIMITS.max_payload_bytes or 0)
    for frame in maker.stream(300, good_every=3):
        assert_same(frame.data, LIMITS, received)


CHANGES: list[dict[str, Any]] = [
    {},
    {"occurred": "2026-01-02T03:04:05.1234567Z"},  # msgspec would round, pydantic truncates
    {"occurred": "2026-01-02T03:04:05.9999999Z"},
    {"occurred": "2026-01-02T03:04:05.99999999999999999999999Z"},  # a '.' in its header
    {"occurred": "2026-01-02T03:04:05.999999+01:00"},
    {"occurred": "2026-01-02T03:04:05"},  # naive: UTC
    {"occurred": "2026-01-02t03:04:05z"},
    {"occurred": "2026-01-02 03:04:05+05:30"},
    {"occurred": "2026-01-02T03:04:05+0530"},
    {"occurred": "2026-01-02T03:04Z"},
    {"occurred": "2026-01-02"},
    {"occurred": 1_767_322_445},
    {"occurred": "1969-12-31T23:59:59Z"},
    {"occurred": "9000-01-01T00:00:00Z"},
    {"occurred": "8999-12-31T23:59:59+00:00"},
    {"occurred": "0001-01-01T00:30:00+01:00"},
    {"id": "{8b0f9d1e-2c3a-4b5d-9e6f-7a8b9c0d1e2f}"},
    {"id": "8B0F9D1E2C3A4B5D9E6F7A8B9C0D1E2F"},
    {"id": None},
    {"id": ...},
    {"follows": None},
    {"follows": "8b0f9d1e-2c3a-4b5d-9e6f-7a8b9c0d1e2f"},
    {"received": "2020-01-01T00:00:00Z"},
    {"received": "not a time"},
    {"received": None},
    {"event": ""},
    {"event": "x" * 1025},
    {"event": "é" * 1024},
    {"resource": {"prefect.resource.id": ""}},
    {"resource": {"prefect.resource.id": "a", "n": 1}},
    {"resource": {f"l{i}": "v" for i in range(21)} | {"prefect.resource.id": "a"}},
    {"related": [{"prefect.resource.id": "a"}]},
    {"related": [{"prefect.resource.id": "a", "prefect.resource.role": ""}]},
    {"related": None},
    {"related": [{"prefect.resource.id": "a", "prefect.resource.role": "r"}] * 11},
    {"payload": {"big": 2**64}},
    {"payload": {"small": -(2**63) - 1}},
    {"payload": {"edge": 2**64 - 1, "low": -(2**63)}},
    {"payload": {"nan": float("nan")}},
    {"payload": {"long": "x" * 3_000}},
    {"payload": {"deep": json.loads("[" * 120 + "]" * 120)}},
    {"payload": None},
    {"payload": []},
    {"payload": "text"},
    {"payload": {}},
    # Bytes that ask the batch check for a closer look: UTF-8 letters whose lead
    # byte is a msgpack binary header, long runs of digits, many brackets.
    {"payload": {"name": "Łódź ĄĘ ƀ", "n": 1}},
    {"payload": {"id": "1234567890123456789012", "n": 9_223_372_036_854_775_807}},
    {"payload": {"n": 18_446_744_073_709_551_615, "m": -9_223_372_036_854_775_808}},
    {"payload": {"text": "[[[{{{" * 40}},
    {"payload": {"deep": json.loads("[" * 99 + "]" * 99)}},
    {"payload": {"deep": json.loads("[" * 100 + "]" * 100)}},
    {"payload": {"wide": [[1, [2]]] * 60}},
    {"extra": 1},
]


@pytest.mark.parametrize("changes", CHANGES)
@pytest.mark.parametrize("received", [None, RECEIVED])
def test_values_msgspec_and_pydantic_read_differently_go_the_models_way(
    changes: dict[str, Any], received: datetime | None
) -> None:
    document = doc(**changes)
    with_id = "id" in document  # one made up when none is given: a new one each time
    assert_same(json.dumps(document).encode(), LIMITS, received, with_id)
    assert_same(json.dumps([document, doc()]).encode(), LIMITS, received, with_id)
    try:
        one = msgpack.packb(document, use_bin_type=True)
    except OverflowError:
        return  # JSON only: msgpack has no such integer
    assert_same(one, LIMITS, received, with_id)
    batch = msgpack.packb([doc(), document], use_bin_type=True)
    assert_same(batch, LIMITS, received, with_id)


def test_msgpack_timestamps_extensions_binary_and_integer_keys() -> None:
    occurred = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    for value in [
        {"occurred": occurred},
        {"occurred": msgpack.Timestamp(1_767_322_445, 866_586_999)},  # msgspec rounds up
        {"occurred": msgpack.Timestamp(1_767_322_445)},  # timestamp 32
        {"occurred": msgpack.Timestamp(2**40, 5)},  # timestamp 96
        {"occurred": msgpack.Timestamp(-5, 5)},
        {"occurred": occurred - timedelta(days=20_000)},
        {"payload": {"when": occurred}},
        {"payload": {"blob": b"\x00\x01"}},
        {"payload": {"x": msgpack.ExtType(5, b"ab")}},
        {"payload": {"m": {1: "int key"}}},
        {"event": b"bytes name"},
        {"id": uuid4().bytes},
    ]:
        document = doc(**value)
        data = msgpack.packb(document, use_bin_type=True, datetime=True, strict_types=False)
        assert_same(data, LIMITS, None)
        # In a batch, times and payloads are decoded together: one unusual value
        # leaves the others as they are.
        for batch in ([doc(), document, doc()], [document] * 3):
            data = msgpack.packb(batch, use_bin_type=True, datetime=True, strict_types=False)
            assert_same(data, LIMITS, RECEIVED)


def test_a_batch_of_mixed_times_and_payloads_decodes_as_the_model_decodes_it() -> None:
    occurred = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    documents = [
        doc(occurred=occurred),
        doc(occurred="2026-01-02T03:04:05.5+02:00"),
        doc(occurred=msgpack.Timestamp(1_767_322_445, 999_999_999)),
        doc(payload={"when": msgpack.Timestamp(1_767_322_445, 500)}),
        doc(payload={"blob": b""}),
        doc(payload=...),
        doc(received=occurred),
        doc(received="2026-01-02T03:04:05Z"),
    ]
    data = msgpack.packb(documents, use_bin_type=True, datetime=True)
    decoded = assert_same(data, LIMITS, None)
    assert len(decoded.events) == 7
    assert [r.index for r in decoded.rejections] == [4]  # binary data in its payload
    assert assert_same(data, LIMITS, RECEIVED).events[6].received == RECEIVED


def test_a_typical_batch_goes_the_fast_way_and_matches_the_model() -> None:
    documents = [doc() for _ in range(50)]
    data = msgpack.packb(documents, use_bin_type=True)
    fast = fast_events(data, False, limits=LIMITS, max_batch=10_000, received=RECEIVED)
    assert fast is not None and len(fast) == 50
    assert all(isinstance(event, Event) and event.received == RECEIVED for event in fast)
    model = by_model(data, LIMITS, RECEIVED)
    assert [e.model_dump() for e in fast] == [e.model_dump() for e in model.events]
    # Frozen, hashable and copyable as validated events are.
    assert fast[0].model_copy(update={"event": "y"}).event == "y"


@pytest.mark.parametrize("is_json", [False, True])
def test_a_typical_single_event_goes_the_fast_way_and_matches_the_model(is_json: bool) -> None:
    document = doc(occurred=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC))
    if is_json:
        data = json.dumps(document, default=str).encode()
    else:
        data = msgpack.packb(document, use_bin_type=True, datetime=True)
    fast = fast_events(data, is_json, limits=LIMITS, max_batch=1, received=RECEIVED)
    assert fast is not None and len(fast) == 1
    model = by_model(data, LIMITS, RECEIVED)
    assert [e.model_dump() for e in fast] == [e.model_dump() for e in model.events]


def test_an_invalid_event_keeps_the_models_message_with_its_field_path() -> None:
    bad = doc(related=[{"prefect.resource.id": "a"}])
    decoded = assert_same(json.dumps([doc(), bad]).encode(), LIMITS, None)
    assert len(decoded.events) == 1
    assert decoded.rejections[0].message == (
        "event 1: related[0]: must have a 'prefect.resource.role' label"
    )


@pytest.mark.parametrize("seed", range(4))
def test_event_file_lines_read_fast_are_what_the_model_reads_from_json(seed: int) -> None:
    """read_events and replay scenarios: a line made the fast way equals the model's
    ``model_validate_json`` of it (the reader's way before); other lines go there."""
    maker = FrameMaker(seed=seed)
    limits = EventLimits()
    lines = [json.dumps(doc(**changes)).encode() for changes in CHANGES]
    for frame in maker.stream(200, good_every=2):
        if frame.data[:1] == b"{":
            lines.append(frame.data)
    made = 0
    for line in lines:
        fast = fast_event_line(line, limits)
        if fast is None:
            continue
        made += 1
        model = Event.model_validate_json(line, context={"limits": limits})
        assert repr(fast.model_dump(exclude={"id"})) == repr(model.model_dump(exclude={"id"}))
        if b'"id"' in line:
            assert fast.id == model.id
    assert made > 10
