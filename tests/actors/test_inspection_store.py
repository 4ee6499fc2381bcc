"""What dry runs, history and ``why`` read from the store: events by id, a version's
first event, action records by key, and the log's facts for lint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from marmot.actors.inspection import log_facts
from marmot.actors.store import Store
from marmot.engine.models.events import Event

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "marmot.db") as opened:
        yield opened


def _event(name: str, seconds: float, **labels: str) -> Event:
    at = T0 + timedelta(seconds=seconds)
    return Event.model_validate(
        {
            "occurred": at,
            "received": at,
            "event": name,
            "resource": {"prefect.resource.id": "r.1", **labels},
            "related": [{"prefect.resource.id": "d.1", "prefect.resource.role": "deployment"}],
        }
    )


def test_find_ids_returns_logged_events_in_arrival_order(store: Store) -> None:
    events = [_event("a", 0), _event("b", 1), _event("c", 2)]
    seqs = store.events.append(events)
    found = store.events.find_ids([events[2].id, uuid4(), events[0].id])
    assert [(seq, e.id) for seq, e in found] == [(seqs[0], events[0].id), (seqs[2], events[2].id)]


def test_first_seq_since_is_the_seq_before_the_first_event_received_then(store: Store) -> None:
    seqs = store.events.append([_event("a", 0), _event("b", 10), _event("c", 20)])
    assert store.events.first_seq_since(T0 + timedelta(seconds=5)) == seqs[1] - 1
    assert store.events.first_seq_since(T0 - timedelta(days=1)) == seqs[0] - 1
    assert store.events.first_seq_since(T0 + timedelta(days=1)) == seqs[2]


def test_action_records_by_key(store: Store) -> None:
    firing = str(uuid4())
    automation = str(uuid4())
    store.actions.claim(f"{firing}:0", firing_id=firing, automation_id=automation, action_index=0)
    store.actions.finish(f"{firing}:0", "failed", "HTTP 500")
    [record] = store.actions.records([f"{firing}:0", f"{firing}:1"])
    assert (record.status, record.detail, record.action_index) == ("failed", "HTTP 500", 0)


def test_log_facts_gather_names_labels_and_values(store: Store) -> None:
    store.events.append([_event("job.done", 0, env="prod"), _event("job.failed", 1)])
    facts = log_facts(store, days=7)
    assert facts.names == {"job.done", "job.failed"}
    assert "env" in facts.labels_by_name["job.done"]
    assert "related:deployment:prefect.resource.id" in facts.labels_by_name["job.failed"]
    assert facts.values_by_label["env"] == {"prod"}
    assert facts.related_values_by_label["prefect.resource.role"] == {"deployment"}
