"""Event ids Marmot gives at its edges are version 7 UUIDs: unique and ordered by
creation time, as Prefect's own event ids are (the event log's id index then grows
at its end)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from marmot.engine.models.events import Event, EventLimits
from marmot.transport import event_ids
from marmot.transport.codec import decode_frame
from marmot.transport.event_decoder import fast_event_line
from marmot.transport.event_ids import new_event_id
from marmot.transport.requests import Requests


def _ms(value: UUID) -> int:
    return value.int >> 80


def test_a_new_id_is_a_version_7_uuid_carrying_the_time_in_milliseconds() -> None:
    before = datetime.now(UTC).timestamp() * 1000
    made = new_event_id()
    after = datetime.now(UTC).timestamp() * 1000
    assert made.version == 7
    assert made.variant == "specified in RFC 4122"
    assert before - 1 <= _ms(made) <= after + 1


def test_ids_made_in_later_milliseconds_sort_later_and_none_repeats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter(range(1_765_000_000_000_000_000, 1_765_000_100_000_000_000, 1_000_000))
    monkeypatch.setattr(event_ids.time, "time_ns", lambda: next(clock))
    made = [new_event_id() for _ in range(5000)]
    assert made == sorted(made)
    assert len({m.int & ((1 << 74) - 1) for m in made}) == 5000  # the random bits differ


def test_events_without_an_id_get_one_wherever_they_come_in() -> None:
    document = {"event": "a.b", "resource": {"prefect.resource.id": "r.1"}}
    decoded = fast_event_line(
        b'{"occurred": "2026-12-06T10:00:00Z", "event": "a.b", '
        b'"resource": {"prefect.resource.id": "r.1"}}',
        EventLimits(),
    )
    assert decoded is not None and decoded.id.version == 7
    emitted = Requests.emit([document]).params["events"][0]
    assert UUID(emitted["id"]).version == 7
    # A batch the model judges (one of its events is invalid) gives ids the same way.
    frame = decode_frame(
        b'[{"occurred": "2026-12-06T10:00:00Z", "event": "a.b", '
        b'"resource": {"prefect.resource.id": "r.1"}}, {"event": 5}]'
    )
    assert len(frame.rejections) == 1
    assert [e.id.version for e in frame.events] == [7]


def test_the_engine_model_alone_gives_a_random_id() -> None:
    document = {
        "occurred": "2026-12-06T10:00:00Z",
        "event": "a.b",
        "resource": {"prefect.resource.id": "r.1"},
    }
    assert Event.model_validate(document).id.version == 4
