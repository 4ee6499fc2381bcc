"""Fuzzing the ingest path: hostile frames through the codec, then through a daemon.

Whatever a frame holds, it must end as accepted events or as rejections with
a reason from the stable set; nothing may raise; good events among the
garbage must decode (and, in the daemon, fire) exactly as sent; and every
accepted event must be one the daemon can log, read back and hand to an
actor.
"""

from __future__ import annotations

import contextlib
import json
import math
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from pydantic_core import to_json

from marmot.actors.wire import Batch
from marmot.engine.models.events import MAX_PAYLOAD_DEPTH, Event, EventLimits
from marmot.transport.client import Client
from marmot.transport.codec import REASONS, DecodedFrame, decode_frame
from tests.fuzz.daemons import own_daemon
from tests.fuzz.frames import Frame, FrameMaker, as_json_doc, packb
from tests.integration.harness import DaemonThread, wait_for

# The drop reasons are a Prometheus label that dashboards and alerts rely on:
# changing the set must be deliberate, so it is spelled out here.
STABLE_REASONS = frozenset(
    {
        "too_large",
        "undecodable",
        "not_an_event",
        "batch_too_large",
        "invalid_event",
        "payload_too_large",
    }
)
MAX_PAYLOAD_BYTES = 262_144
LIMITS = EventLimits(max_payload_bytes=MAX_PAYLOAD_BYTES)
RECEIVED = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
BULK_FRAMES = 100_000


def decode(data: bytes, limits: EventLimits = LIMITS) -> DecodedFrame:
    return decode_frame(data, limits=limits, received=RECEIVED)


def assert_as_sent(event: Event, doc: dict[str, Any]) -> None:
    """The decoded event is exactly the document that was sent."""
    assert event.id == UUID(doc["id"])
    assert event.occurred == doc["occurred"]
    assert event.occurred.tzinfo is UTC
    assert event.event == doc["event"]
    assert event.resource == doc["resource"]
    assert event.related == doc["related"]
    assert event.payload == doc["payload"]
    assert event.follows is None
    assert event.received == RECEIVED


def assert_deliverable(event: Event, limits: EventLimits = LIMITS) -> None:
    """The daemon can log the event, read it back, and send it to an actor."""
    logged = event.model_dump_json()
    assert Event.model_validate_json(logged).id == event.id
    Batch([(1, ["automation"], event)]).pack()
    if limits.max_payload_bytes is not None:
        assert len(to_json(event.payload, inf_nan_mode="null")) <= limits.max_payload_bytes


def check_frame(frame: Frame, decoded: DecodedFrame) -> None:
    """Everything a decoded frame must satisfy, whatever it held."""
    rejections, events = decoded.rejections, decoded.events
    for rejection in rejections:
        assert rejection.reason in STABLE_REASONS, rejection
        assert rejection.message, rejection
    if any(r.index is None for r in rejections):
        # A frame refused whole has one rejection and no events.
        assert len(rejections) == 1 and events == [], decoded
    if frame.reason is not None:
        assert [r.reason for r in rejections] == [frame.reason], (frame.kind, decoded)
    if frame.count is not None:
        assert len(events) + len(rejections) == frame.count, (frame.kind, decoded)
        rejected = {r.index for r in rejections}
        accepted_at = [i for i in range(frame.count) if i not in rejected]
        by_index = dict(zip(accepted_at, events, strict=True))
        for index, doc in frame.good:
            assert index in by_index, (index, rejections)
            assert_as_sent(by_index[index], doc)
    elif frame.good:
        assert rejections == [], (frame.kind, rejections)
        [(_, doc)] = frame.good
        [event] = events
        assert_as_sent(event, doc)
    elif not events and not rejections:
        assert _is_empty_batch(frame.data), frame
    for event in events:
        assert_deliverable(event)


def _is_empty_batch(data: bytes) -> bool:
    try:
        return bool(json.loads(data) == [])
    except ValueError:
        return bool(msgpack.unpackb(data) == [])


# ---------------------------------------------------------------- bulk, seeded


def test_a_hundred_thousand_hostile_frames_decode_without_raising() -> None:
    maker = FrameMaker(seed=20260301, max_payload_bytes=MAX_PAYLOAD_BYTES)
    frames = maker.stream(BULK_FRAMES)
    reasons: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    good_checked = 0
    for frame in frames:
        decoded = decode(frame.data)
        check_frame(frame, decoded)
        reasons.update(r.reason for r in decoded.rejections)
        kinds[frame.kind] += 1
        good_checked += len(frame.good)
    assert len(frames) == BULK_FRAMES
    # The mix reaches every rejection reason, and thousands of good events.
    assert set(reasons) == STABLE_REASONS, reasons
    assert good_checked > 5_000, kinds


def test_the_stable_reasons_are_the_codecs() -> None:
    assert REASONS == STABLE_REASONS


# ---------------------------------------------------------------- structured, hypothesis

texts = st.text(max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
labels = st.dictionaries(texts.filter(lambda k: k != "prefect.resource.id"), texts, max_size=3)
good_docs = st.builds(
    lambda id_, occurred, name, resource, related, payload: {
        "id": str(id_),
        "occurred": occurred,
        "event": name,
        "resource": {**resource, "prefect.resource.id": "r." + resource.get("x", "1")},
        "related": [
            {"prefect.resource.id": f"rel.{i}", "prefect.resource.role": role}
            for i, role in enumerate(related)
        ],
        "payload": payload,
    },
    st.uuids(),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    st.text(min_size=1, max_size=40),
    labels,
    st.lists(st.text(min_size=1, max_size=8), max_size=3),
    st.dictionaries(texts, json_values, max_size=5),
)
hostile_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=8)
    | st.datetimes(timezones=st.just(UTC))
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=6))
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(good_docs, st.booleans())
def test_good_events_decode_exactly_as_sent(doc: dict[str, Any], as_json: bool) -> None:
    data = json.dumps(as_json_doc(doc)).encode() if as_json else packb(doc)
    check_frame(Frame("good", data, ((None, doc),)), decode(data))


@settings(max_examples=200, deadline=None)
@given(good_docs, st.sampled_from(sorted(Event.model_fields)), hostile_values)
def test_a_wrong_value_in_any_field_is_refused_or_harmless(
    doc: dict[str, Any], field: str, value: Any
) -> None:
    doc[field] = value
    decoded = decode(packb(doc))
    check_frame(Frame("wrong-type", packb(doc)), decoded)
    for rejection in decoded.rejections:
        if rejection.reason == "invalid_event":
            assert field in rejection.message, rejection


@settings(max_examples=150, deadline=None)
@given(st.lists(good_docs | hostile_values, min_size=1, max_size=6))
def test_good_events_in_a_batch_survive_their_neighbours(items: list[Any]) -> None:
    frame_data = packb(items)
    decoded = decode(frame_data)
    if decoded.rejections and decoded.rejections[0].index is None:
        # Only what msgpack itself refuses (an ext type, a huge timestamp) sinks a batch.
        assert decoded.rejections[0].reason == "undecodable"
        return
    good = tuple(
        (i, item)
        for i, item in enumerate(items)
        if isinstance(item, dict) and item.keys() == {*Event.model_fields} - {"follows", "received"}
    )
    check_frame(Frame("batch", frame_data, good, count=len(items)), decoded)


@settings(max_examples=200, deadline=None)
@given(good_docs, st.data())
def test_a_truncated_frame_is_undecodable(doc: dict[str, Any], data: Any) -> None:
    frame = packb(doc) if data.draw(st.booleans()) else json.dumps(as_json_doc(doc)).encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    decoded = decode(frame[:cut])
    assert [r.reason for r in decoded.rejections] == ["undecodable"]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["msgpack", "json"]))
def test_nesting_of_any_depth_is_refused_or_kept_whole(depth: int, encoding: str) -> None:
    nested: Any = 1
    for _ in range(depth - 1):
        nested = [nested]
    doc: dict[str, Any] = {
        "occurred": RECEIVED,
        "event": "deep",
        "resource": {"prefect.resource.id": "r"},
        "payload": {"d": nested},
    }
    # Past a few hundred levels the encoders themselves give up: bytes, then.
    if depth < 400:
        data = json.dumps(as_json_doc(doc)).encode() if encoding == "json" else packb(doc)
    elif encoding == "json":
        data = b"[" * depth + b"]" * depth
    else:
        data = b"\x91" * depth + b"\x01"
    decoded = decode(data)
    check_frame(Frame("deep", data), decoded)
    if depth > MAX_PAYLOAD_DEPTH:
        assert decoded.events == []
    if depth >= 400:
        return
    # The payload map is the first level, the lists the other depth - 1.
    if depth <= MAX_PAYLOAD_DEPTH:
        assert len(decoded.events) == 1
    else:
        message = f"payload: nested deeper than {MAX_PAYLOAD_DEPTH} levels"
        assert [r.message for r in decoded.rejections] == [message]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40) | st.integers() | st.floats() | st.datetimes())
def test_any_occurred_value_is_accepted_as_utc_or_refused(occurred: Any) -> None:
    if isinstance(occurred, int) and not -(2**63) <= occurred < 2**64:
        return  # msgpack has no such integer
    if isinstance(occurred, datetime):
        occurred = occurred.isoformat()  # naive: taken as UTC
    doc = {"occurred": occurred, "event": "t", "resource": {"prefect.resource.id": "r"}}
    decoded = decode(packb(doc))
    check_frame(Frame("occurred", b"?"), decoded)
    for event in decoded.events:
        assert event.occurred.tzinfo is UTC


# Leaves that grow the most when a payload is written as JSON: control
# characters (\u00XX), `false` and `null` in arrays, float32s, timestamps.
adversarial_leaves = (
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20)
    | st.just(False)
    | st.none()
    | st.integers(min_value=-32, max_value=127)
    | st.floats(width=32)
    | st.datetimes(timezones=st.just(UTC))
    | st.text(max_size=10)
)
adversarial_payloads = st.dictionaries(
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=3),
    st.recursive(
        adversarial_leaves,
        lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=2), inner),
        max_leaves=25,
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=100, deadline=None)
@given(adversarial_payloads, st.sampled_from(["msgpack", "float32", "json", "batch"]))
def test_no_payload_over_the_limit_slips_through(payload: dict[str, Any], encoding: str) -> None:
    doc = {
        "occurred": RECEIVED,
        "event": "sized",
        "resource": {"prefect.resource.id": "r"},
        "payload": payload,
    }
    if encoding == "json":
        if any(isinstance(v, datetime) for v in _leaves(payload)):
            return  # JSON has no timestamps
        data = json.dumps(as_json_doc(doc)).encode()
    elif encoding == "float32":
        data = msgpack.packb(doc, datetime=True, use_single_float=True)
    elif encoding == "batch":
        data = packb([doc, {**doc, "payload": {}}])
    else:
        data = packb(doc)
    decoded_payload = decode(data, EventLimits()).events[0].payload
    size = len(to_json(decoded_payload, inf_nan_mode="null"))
    # The codec skips measuring payloads that cannot be over the limit: those
    # of frames under a sixth of it. This is the bound it relies on.
    assert size <= 6 * len(data) + 2
    over = decode(data, EventLimits(max_payload_bytes=size - 1))
    assert [r.reason for r in over.rejections] == ["payload_too_large"]
    assert f"payload: {size} bytes as JSON; at most {size - 1} are allowed" in (
        over.rejections[0].message
    )
    at_limit = decode(data, EventLimits(max_payload_bytes=size))
    assert at_limit.rejections == []
    assert len(at_limit.events) == (2 if encoding == "batch" else 1)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_nan_and_infinity_in_a_payload_are_kept_and_stored_as_null() -> None:
    doc = FrameMaker(seed=1).good_doc()
    doc["payload"] = {"x": math.nan, "y": [math.inf, -math.inf]}
    [event] = decode(packb(doc)).events
    assert math.isnan(event.payload["x"])
    assert json.loads(event.model_dump_json())["payload"] == {"x": None, "y": [None, None]}


@pytest.mark.parametrize(
    ("insert", "reason"),
    [
        ('"s": "\\ud800", ', "undecodable"),
        ('"s": "\\ud83d\\ude42", ', None),
        ('"n": 18446744073709551616, ', "undecodable"),
        ('"n": 18446744073709551615, ', None),
        ('"n": -9223372036854775809, ', "undecodable"),
    ],
)
def test_json_that_no_actor_could_receive_is_undecodable(insert: str, reason: str | None) -> None:
    text = json.dumps(as_json_doc(FrameMaker(seed=2).good_doc()))
    data = text.replace('"payload": {', '"payload": {' + insert, 1).encode()
    decoded = decode(data)
    assert [r.reason for r in decoded.rejections] == ([reason] if reason else [])
    for event in decoded.events:
        assert_deliverable(event)


# ---------------------------------------------------------------- through a daemon

DAEMON_FRAMES = 100_000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    """A daemon of this module's own."""
    with own_daemon(tmp_path_factory.mktemp("ingest-fuzz"), "ingest-fuzz") as running:
        yield running


@pytest.fixture
def client(daemon: DaemonThread) -> Iterator[Client]:
    with Client(daemon.rpc_url, timeout_s=30) as c:
        yield c


def http_get(daemon: DaemonThread, path: str) -> bytes:
    url = f"http://127.0.0.1:{daemon.config.http.port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


# Drops of events ingest accepted and the log acknowledged: a re-sent id is
# dropped after it was logged (once), so these are not frames ingest refused.
_AFTER_ACKNOWLEDGING = frozenset({"duplicate", "duplicate_id_other_content"})


def ingest_counters(daemon: DaemonThread) -> Counter[str]:
    """Events accepted from ingest (``accepted``) and drops by reason, from /metrics."""
    counters: Counter[str] = Counter()
    for family in text_string_to_metric_families(http_get(daemon, "/metrics").decode()):
        for sample in family.samples:
            if sample.name == "marmot_events_received_total":
                if sample.labels.get("source") == "ingest":
                    counters["accepted"] += int(sample.value)
            elif (
                sample.name == "marmot_events_dropped_total"
                and sample.labels["reason"] not in _AFTER_ACKNOWLEDGING
            ):
                counters[sample.labels["reason"]] += int(sample.value)
    return counters


def firings_of(client: Client, automation_id: UUID) -> list[str]:
    """The ids of the events that fired an automation, one per firing."""
    resource = f"prefect.automation.{automation_id}"
    triggered = client.filter_events(
        names=["prefect.automation.triggered"], resource_id=resource, limit=10_000
    )
    return [
        related["prefect.resource.id"].removeprefix("prefect.event.")
        for event in triggered
        for related in event["related"]
        if related.get("prefect.resource.role") == "triggering-event"
    ]


@pytest.mark.integration
def test_a_daemon_counts_every_hostile_frame_and_fires_every_good_event(
    daemon: DaemonThread, client: Client
) -> None:
    name = f"fuzz.{uuid4().hex}.good"
    automation = client.create_automation(
        {
            "name": f"fuzz {name}",
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": [name],
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": 60,
            },
        }
    )
    maker = FrameMaker(
        seed=6,
        max_frame_bytes=daemon.config.ingest.max_frame_bytes,
        max_payload_bytes=daemon.config.limits.max_payload_bytes,
        good_name=lambda n: name,
        now=datetime.now(UTC),
        spread=timedelta(seconds=5),
    )
    frames = [frame.data for frame in maker.stream(DAEMON_FRAMES, good_every=50)]
    # What the daemon must count and fire, from the codec checked above.
    limits = daemon.daemon.limits
    expected: Counter[str] = Counter()
    fired: set[str] = set()
    for data in frames:
        decoded = decode_frame(data, limits=limits, max_frame_bytes=maker.max_frame_bytes)
        expected["accepted"] += len(decoded.events)
        expected.update(r.reason for r in decoded.rejections)
        fired.update(str(e.id) for e in decoded.events if e.event == name)
    assert len(fired) > 1_000

    before = ingest_counters(daemon)
    push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 10_000)
    push.connect(daemon.ingest_url)
    try:
        for data in frames:
            push.send(data)
    finally:
        push.close()

    def counted() -> Counter[str]:
        after = ingest_counters(daemon)
        after.subtract(before)
        return +after

    with contextlib.suppress(AssertionError):  # the comparison below shows the difference
        wait_for(lambda: counted() == expected, 60, "every frame to be counted")
    assert counted() == expected  # nothing lost between socket and log (no submit_failed)
    assert json.loads(http_get(daemon, "/healthz"))["ok"] is True
    wait_for(
        lambda: len(firings_of(client, automation.id)) >= len(fired),
        60,
        "every good event to fire",
    )
    assert sorted(firings_of(client, automation.id)) == sorted(fired)  # each exactly once
