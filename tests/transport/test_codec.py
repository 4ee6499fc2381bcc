"""The ingest codec: frames to events, rejection reasons, and RPC value packing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any
from uuid import UUID, uuid4

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marmot.engine.errors import ValidationFailed
from marmot.engine.models.events import Event, EventLimits
from marmot.transport.codec import (
    MAX_PAYLOAD_DEPTH,
    DecodedFrame,
    Rejection,
    decode_frame,
    event_frame,
    events_frame,
    pack_rpc,
    unpack_rpc,
)

OCCURRED = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def event_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": str(uuid4()),
        "occurred": OCCURRED,
        "event": "prefect.flow-run.Completed",
        "resource": {"prefect.resource.id": "prefect.flow-run.1", "prefect.resource.name": "one"},
        "related": [{"prefect.resource.id": "prefect.flow.9", "prefect.resource.role": "flow"}],
        "payload": {"state": {"type": "COMPLETED"}, "tries": 1},
    }
    doc.update(overrides)
    return doc


def packb(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, datetime=True, use_bin_type=True)
    return packed


def only_rejection(frame: DecodedFrame) -> Rejection:
    assert frame.events == []
    assert len(frame.rejections) == 1
    return frame.rejections[0]


# ---------------------------------------------------------------- accepted frames


def test_single_event_frame_decodes_to_one_event() -> None:
    doc = event_doc()
    frame = decode_frame(packb(doc))
    assert frame.rejections == []
    [event] = frame.events
    assert event.id == UUID(doc["id"])
    assert event.occurred == OCCURRED
    assert event.resource_id == "prefect.flow-run.1"
    assert event.payload == {"state": {"type": "COMPLETED"}, "tries": 1}


def test_batch_frame_decodes_every_event_in_order() -> None:
    docs = [event_doc(event=f"e.{n}") for n in range(5)]
    frame = decode_frame(packb(docs))
    assert frame.rejections == []
    assert [e.event for e in frame.events] == [f"e.{n}" for n in range(5)]


def test_empty_batch_is_neither_events_nor_rejections() -> None:
    assert decode_frame(packb([])) == DecodedFrame(events=[], rejections=[])


def test_json_frame_with_rfc3339_occurred_decodes() -> None:
    doc = event_doc(occurred="2024-05-01T14:30:15.123456+02:00")
    frame = decode_frame(b"\n  " + json.dumps(doc).encode())
    assert frame.rejections == []
    [event] = frame.events
    assert event.occurred == OCCURRED
    assert event.occurred.tzinfo is UTC


def test_json_batch_frame_decodes() -> None:
    docs = [event_doc(occurred="2024-05-01T12:30:15.123456Z") for _ in range(3)]
    frame = decode_frame(json.dumps(docs).encode())
    assert len(frame.events) == 3
    assert frame.rejections == []


def test_msgpack_timestamp_occurred_becomes_utc_datetime() -> None:
    plus_two = timezone(timedelta(hours=2))
    doc = event_doc(occurred=msgpack.Timestamp.from_datetime(OCCURRED.astimezone(plus_two)))
    [event] = decode_frame(packb(doc)).events
    assert event.occurred == OCCURRED
    assert event.occurred.tzinfo is UTC


def test_msgpack_frame_with_rfc3339_string_occurred_decodes() -> None:
    [event] = decode_frame(packb(event_doc(occurred="2024-05-01T12:30:15.123456Z"))).events
    assert event.occurred == OCCURRED


def test_received_is_stamped_on_every_event() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    frame = decode_frame(packb([event_doc(), event_doc()]), received=now)
    assert [e.received for e in frame.events] == [now, now]


def test_limits_are_applied_to_validation() -> None:
    doc = event_doc(resource={"prefect.resource.id": "r", "a": "1", "b": "2"})
    rejection = only_rejection(decode_frame(packb(doc), limits=EventLimits(max_labels=2)))
    assert rejection.reason == "invalid_event"
    assert "resource" in rejection.message
    assert "at most 2" in rejection.message


def test_encoded_events_decode_to_equal_events() -> None:
    events = [
        Event.model_validate(event_doc(received=OCCURRED + timedelta(seconds=1))),
        Event.model_validate(event_doc(follows=str(uuid4()))),
    ]
    assert decode_frame(events_frame(events)).events == events
    assert decode_frame(event_frame(events[0])).events == events[:1]


def test_encoded_times_are_msgpack_timestamps() -> None:
    event = Event.model_validate(event_doc())
    raw = msgpack.unpackb(event_frame(event))
    assert isinstance(raw["occurred"], msgpack.Timestamp)
    [raw_batch_item] = msgpack.unpackb(events_frame([event]))
    assert isinstance(raw_batch_item["occurred"], msgpack.Timestamp)
    assert raw_batch_item["id"] == str(event.id)


# ---------------------------------------------------------------- rejections


def test_frame_over_the_size_limit_is_too_large() -> None:
    data = packb(event_doc())
    rejection = only_rejection(decode_frame(data, max_frame_bytes=len(data) - 1))
    assert rejection.reason == "too_large"
    assert rejection.index is None
    assert decode_frame(data, max_frame_bytes=len(data)).events


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        packb(event_doc())[:-3],  # truncated
        packb(event_doc()) + b"\x00",  # trailing bytes
        b'{"event": ',  # truncated JSON
        b'[{"a": 1}] x',  # JSON with trailing garbage
        b'{"event": "\xff"}',  # JSON that is not UTF-8
        b"\xdd\xff\xff\xff\xff",  # an array header claiming 4 G elements
        b"\x91" * 5000 + b"\x80",  # nesting deeper than msgpack's stack
        b"[" * 100_000,  # nesting deeper than Python's stack
        packb({"ext": msgpack.ExtType(42, b"data")}),  # an unknown extension type
        b"\x81\x01\x01",  # an integer map key
    ],
)
def test_bytes_that_are_not_one_value_are_undecodable(data: bytes) -> None:
    rejection = only_rejection(decode_frame(data))
    assert rejection.reason == "undecodable"
    assert rejection.message


@pytest.mark.parametrize("value", [5, "event", None, 1.5, True])
def test_top_level_non_map_is_not_an_event(value: Any) -> None:
    rejection = only_rejection(decode_frame(packb(value)))
    assert rejection.reason == "not_an_event"
    assert rejection.index is None


def test_batch_over_the_limit_is_rejected_whole() -> None:
    rejection = only_rejection(decode_frame(packb([event_doc()] * 4), max_batch=3))
    assert rejection.reason == "batch_too_large"
    assert decode_frame(packb([event_doc()] * 3), max_batch=3).rejections == []


def test_missing_resource_id_names_the_field() -> None:
    rejection = only_rejection(decode_frame(packb(event_doc(resource={"a": "b"}))))
    assert rejection.reason == "invalid_event"
    assert rejection.message == "resource: must have a non-empty 'prefect.resource.id' label"


def test_related_without_role_names_its_index() -> None:
    doc = event_doc(related=[{"prefect.resource.id": "x"}])
    rejection = only_rejection(decode_frame(packb(doc)))
    assert rejection.message == "related[0]: must have a 'prefect.resource.role' label"


def test_wrongly_typed_fields_are_listed_with_their_paths() -> None:
    doc = event_doc(event="", resource={"prefect.resource.id": 5})
    del doc["occurred"]
    message = only_rejection(decode_frame(packb(doc))).message
    assert "occurred: Field required" in message
    assert "event: String should have at least 1 character" in message
    assert "resource.prefect.resource.id: Input should be a valid string" in message


def test_out_of_range_time_is_an_invalid_event() -> None:
    doc = event_doc(occurred="0001-01-01T00:00:00+01:00")
    assert only_rejection(decode_frame(packb(doc))).reason == "invalid_event"


def test_too_deep_payload_is_an_invalid_event() -> None:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(MAX_PAYLOAD_DEPTH):
        inner["a"] = {}
        inner = inner["a"]
    rejection = only_rejection(decode_frame(packb(event_doc(payload=payload))))
    assert rejection.reason == "invalid_event"
    assert rejection.message.startswith("payload: nested deeper")


def test_binary_payload_value_is_an_invalid_event() -> None:
    rejection = only_rejection(decode_frame(packb(event_doc(payload={"blob": [b"\xff"]}))))
    assert rejection.reason == "invalid_event"
    assert rejection.message.startswith("payload:")


def test_batch_keeps_good_events_and_rejects_only_bad_elements() -> None:
    good = [event_doc(event="good.1"), event_doc(event="good.2")]
    batch = [good[0], "not a map", event_doc(resource={}), good[1]]
    frame = decode_frame(packb(batch))
    assert [e.event for e in frame.events] == ["good.1", "good.2"]
    assert [(r.reason, r.index) for r in frame.rejections] == [
        ("not_an_event", 1),
        ("invalid_event", 2),
    ]
    assert frame.rejections[1].message.startswith("event 2: resource:")


# ---------------------------------------------------------------- never raises


@settings(max_examples=300)
@given(st.binary(max_size=256))
def test_decode_frame_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    frame = decode_frame(data)
    reasons = {"undecodable", "not_an_event", "invalid_event"}
    assert all(r.reason in reasons for r in frame.rejections)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=8)
    | st.datetimes(timezones=st.just(UTC))
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
label_maps = st.dictionaries(
    st.sampled_from(["prefect.resource.id", "prefect.resource.role", "x"]), values | st.text()
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": values | st.uuids().map(str),
        "occurred": values,
        "event": values,
        "resource": label_maps | values,
        "related": st.lists(label_maps, max_size=3) | values,
        "payload": values,
        "follows": values,
        "received": values,
    },
)


@settings(max_examples=150)
@given(event_like | st.lists(event_like | values, max_size=4) | values)
def test_decode_frame_never_raises_on_arbitrary_msgpack_values(value: Any) -> None:
    frame = decode_frame(packb(value), max_batch=3)
    if isinstance(value, list) and len(value) <= 3:
        assert len(frame.events) + len(frame.rejections) == len(value)


@settings(max_examples=50)
@given(event_like | st.lists(event_like, max_size=3))
def test_decode_frame_never_raises_on_arbitrary_json_values(value: Any) -> None:
    text = json.dumps(value, default=str)
    decode_frame(text.encode())


# ---------------------------------------------------------------- pack / unpack


class Colour(Enum):
    RED = "red"


def test_pack_round_trips_datetimes_as_utc_and_uuids_as_strings() -> None:
    uid = uuid4()
    plus_two = timezone(timedelta(hours=2))
    value = {
        "aware": OCCURRED.astimezone(plus_two),
        "naive": datetime(2024, 1, 1, 8),
        "id": uid,
        "nested": [{"when": OCCURRED}],
    }
    out = unpack_rpc(pack_rpc(value))
    assert out["aware"] == OCCURRED
    assert out["aware"].tzinfo is UTC
    assert out["naive"] == datetime(2024, 1, 1, 8, tzinfo=UTC)
    assert out["id"] == str(uid)
    assert out["nested"] == [{"when": OCCURRED}]


def test_pack_flattens_models_sets_tuples_and_enums() -> None:
    event = Event.model_validate(event_doc())
    out = unpack_rpc(pack_rpc({"event": event, "set": {3}, "tuple": (1, 2), "colour": Colour.RED}))
    assert Event.model_validate(out["event"]) == event
    assert out["event"]["occurred"] == event.occurred
    assert out["set"] == [3]
    assert out["tuple"] == [1, 2]
    assert out["colour"] == "red"


def test_pack_refuses_unknown_objects() -> None:
    with pytest.raises(TypeError):
        pack_rpc({"x": object()})


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x01\x02"])
def test_unpack_raises_validation_failed_on_bad_bytes(data: bytes) -> None:
    with pytest.raises(ValidationFailed):
        unpack_rpc(data)
