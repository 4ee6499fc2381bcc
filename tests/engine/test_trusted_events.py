"""Events made without validation (``trusted_event``) behave as validated ones."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

from marmot.engine.models.events import Event, trusted_event


def _pair() -> tuple[Event, Event]:
    document = {
        "id": str(uuid4()),
        "occurred": "2026-03-01T09:00:00.123456Z",
        "event": "prefect.flow-run.Failed",
        "resource": {"prefect.resource.id": "prefect.flow-run.1"},
        "related": [{"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"}],
        "payload": {"n": [1, 2.5, None]},
    }
    validated = Event.model_validate(document)
    trusted = trusted_event(
        validated.id,
        validated.occurred,
        validated.event,
        dict(validated.resource),
        [dict(labels) for labels in validated.related],
        dict(validated.payload),
    )
    return validated, trusted


def test_a_trusted_event_equals_and_dumps_as_the_validated_one() -> None:
    validated, trusted = _pair()
    assert trusted == validated
    assert trusted.model_dump() == validated.model_dump()
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_fields_set == validated.model_fields_set | {"follows", "received"}
    assert hash(trusted.id) == hash(validated.id)


def test_copies_of_trusted_events_do_not_share_what_was_set() -> None:
    _, first = _pair()
    _, second = _pair()
    changed = first.model_copy(update={"event": "other"})
    assert changed.event == "other" and first.event == "prefect.flow-run.Failed"
    changed.model_fields_set.add("extra-marker")
    assert "extra-marker" not in first.model_fields_set
    assert "extra-marker" not in second.model_fields_set


def test_a_trusted_event_is_frozen() -> None:
    _, trusted = _pair()
    with pytest.raises(ValidationError):
        trusted.event = "other"  # type: ignore[misc]
    assert trusted.received is None
    assert trusted.occurred == datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
