"""The SQLite store against a real database file: registry, event log, checkpoints, action log."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marmot.actors.store import SCHEMA_VERSION, Store
from marmot.actors.store import events as event_log
from marmot.engine.clock import ManualClock
from marmot.engine.errors import Conflict, NotFound, Unsupported, ValidationFailed
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def FakeClock(now: datetime = T0) -> ManualClock:
    """A settable clock for the store's created/updated stamps."""
    return ManualClock(now)


@pytest.fixture
def clock() -> ManualClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[Store]:
    with Store.open(tmp_path / "data" / "marmot.db", clock=clock) as opened:
        yield opened


def automation(name: str = "a", **fields: Any) -> Automation:
    document = {
        "name": name,
        "trigger": {"type": "event", "expect": ["x"]},
        "actions": [{"type": "do-nothing"}],
        **fields,
    }
    return Automation.model_validate(document)


def event(name: str = "x", *, resource: str = "r.1", at: datetime = T0, **fields: Any) -> Event:
    return Event.model_validate(
        {
            "occurred": at.isoformat(),
            "event": name,
            "resource": {"prefect.resource.id": resource},
            **fields,
        }
    )


# -- automations ------------------------------------------------------------------------


def test_created_automation_reads_back_by_id_and_name(store: Store) -> None:
    a = automation("nightly", description="d", tags=["ops"])

    created = store.automations.create(a)

    assert created.automation == a
    assert created.version == 1
    assert created.created == created.updated == T0
    assert created.created.tzinfo is not None
    assert store.automations.read(a.id) == created
    assert store.automations.read_by_name("nightly") == created


def test_update_replaces_document_keeps_created_and_increments_version(
    store: Store, clock: ManualClock
) -> None:
    a = automation("one")
    store.automations.create(a)
    clock.advance(60)

    changed = a.model_copy(update={"name": "two", "description": "renamed"})
    updated = store.automations.update(changed)

    assert updated.version == 2
    assert updated.created == T0
    assert updated.updated == T0 + timedelta(seconds=60)
    assert store.automations.read(a.id).automation.description == "renamed"
    assert store.automations.read_by_name("two").automation.id == a.id
    with pytest.raises(NotFound):
        store.automations.read_by_name("one")
    assert store.automations.update(changed).version == 3


def test_set_enabled_toggles_and_increments_version(store: Store) -> None:
    a = automation()
    store.automations.create(a)

    paused = store.automations.set_enabled(a.id, False)

    assert paused.automation.enabled is False
    assert paused.version == 2
    assert store.automations.list(enabled=True) == []
    assert store.automations.set_enabled(a.id, True).automation.enabled is True


def test_enabling_an_automation_that_would_loop_is_refused(store: Store) -> None:
    looping = automation(
        "loop",
        enabled=False,
        trigger={"type": "event", "expect": ["prefect.flow-run.Running"]},
        actions=[{"type": "run-deployment", "source": "inferred"}],
    )
    store.automations.create(looping)

    with pytest.raises(ValidationFailed, match="endless loop"):
        store.automations.set_enabled(looping.id, True)
    assert store.automations.read(looping.id).automation.enabled is False
    assert store.automations.read(looping.id).version == 1


def test_deleted_automation_is_gone(store: Store) -> None:
    a = automation()
    store.automations.create(a)

    store.automations.delete(a.id)

    with pytest.raises(NotFound):
        store.automations.read(a.id)
    with pytest.raises(NotFound):
        store.automations.delete(a.id)


def test_duplicate_name_conflicts_and_names_the_automation(store: Store) -> None:
    store.automations.create(automation("same"))

    with pytest.raises(Conflict, match="'same'"):
        store.automations.create(automation("same"))
    assert len(store.automations.list()) == 1


def test_duplicate_id_conflicts(store: Store) -> None:
    a = automation("first")
    store.automations.create(a)

    with pytest.raises(Conflict, match=str(a.id)):
        store.automations.create(a.model_copy(update={"name": "second"}))


def test_renaming_onto_another_automations_name_conflicts(store: Store) -> None:
    store.automations.create(automation("taken"))
    mine = automation("mine")
    store.automations.create(mine)

    with pytest.raises(Conflict, match="'taken'"):
        store.automations.update(mine.model_copy(update={"name": "taken"}))
    assert store.automations.read(mine.id).version == 1


def test_missing_automation_raises_not_found(store: Store) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=str(missing)):
        store.automations.read(missing)
    with pytest.raises(NotFound, match="'nobody'"):
        store.automations.read_by_name("nobody")
    with pytest.raises(NotFound):
        store.automations.update(automation())
    with pytest.raises(NotFound):
        store.automations.set_enabled(missing, True)


def test_list_filters_by_prefix_enabled_and_tags_sorted_by_name(store: Store) -> None:
    store.automations.create(automation("prod-b", tags=["ops", "db"]))
    store.automations.create(automation("prod-a", tags=["ops"]))
    store.automations.create(automation("dev-c", tags=["ops", "db"], enabled=False))
    store.automations.create(automation("prod_x"))

    def names(**filters: Any) -> list[str]:
        return [s.automation.name for s in store.automations.list(**filters)]

    assert names() == ["dev-c", "prod-a", "prod-b", "prod_x"]
    assert names(name_prefix="prod-") == ["prod-a", "prod-b"]
    assert names(enabled=False) == ["dev-c"]
    assert names(tags=["ops"]) == ["dev-c", "prod-a", "prod-b"]
    assert names(tags=["ops", "db"]) == ["dev-c", "prod-b"]
    assert names(tags=["ops", "db"], enabled=True) == ["prod-b"]
    assert names(limit=2) == ["dev-c", "prod-a"]
    assert names(limit=2, offset=2) == ["prod-b", "prod_x"]
    assert names(offset=3) == ["prod_x"]


def test_a_listing_reads_only_the_documents_changed_since_they_were_parsed(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    # A fleet's `automation ls` must not read and compare 10,000 documents each time.
    for name in ("a", "b", "c"):
        store.automations.create(automation(name))
    with Store.open(store.path, clock=clock) as other:
        statements: list[str] = []
        other.db.conn.set_trace_callback(statements.append)

        def documents_read() -> list[str]:
            read = [s for s in statements if "document" in s.split("FROM")[0]]
            statements.clear()
            return read

        assert [s.automation.name for s in other.automations.list()] == ["a", "b", "c"]
        assert len(documents_read()) == 1  # the first listing parses them all, in one read
        assert [s.automation.name for s in other.automations.list()] == ["a", "b", "c"]
        assert documents_read() == []
        # Changed by another writer: a new version, so that one document is read again.
        b = store.automations.read_by_name("b")
        clock.advance(timedelta(seconds=1))
        store.automations.update(b.automation.model_copy(update={"description": "new"}))
        listed = {s.automation.name: s for s in other.automations.list()}
        assert listed["b"].version == 2 and listed["b"].automation.description == "new"
        assert listed["a"].version == 1
        assert documents_read() == [
            f"SELECT id, document FROM automations WHERE id IN ('{b.automation.id}')"
        ]


# -- event log --------------------------------------------------------------------------


def test_append_returns_increasing_sequence_numbers(store: Store) -> None:
    assert store.events.last_seq() == 0

    first = store.events.append([event(), event(), event()])
    second = store.events.append([event()])

    assert first == [1, 2, 3]
    assert second == [4]
    assert store.events.last_seq() == 4
    assert store.events.count() == 4
    assert store.events.append([]) == []


def test_reappending_an_event_returns_its_seq_and_stores_it_once(store: Store) -> None:
    e = event()
    [seq] = store.events.append([e])

    again = store.events.append([event(), e, e])

    assert again[1:] == [seq, seq]
    assert again[0] == seq + 1
    assert store.events.count() == 2
    assert store.events.append([e]) == [seq]
    assert store.events.last_seq() == seq + 1


def test_repeats_within_one_new_batch_share_one_seq(store: Store) -> None:
    e, f = event("e"), event("f")

    seqs = store.events.append([e, f, e])

    assert seqs == [1, 2, 1]
    assert [x.event for _, x in store.events.read_after(0)] == ["e", "f"]
    assert store.events.last_seq() == 2


@pytest.mark.parametrize("host_parameters", [None, 999])
def test_big_batches_go_in_whole_in_order_also_with_an_old_id_inside(
    store: Store, host_parameters: int | None
) -> None:
    """Rows are inserted many per statement (512, then powers of two); an SQLite
    allowing fewer host parameters (999 before 3.32) gets smaller statements."""
    if host_parameters is not None:
        store.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, host_parameters)
        store.events._chunk_rows = event_log._chunk_rows(store.db.conn)
        # SQLite before 3.32: 999 // 6 = 166 rows, a power of two
        assert store.events._chunk_rows == 128
    else:
        assert store.events._chunk_rows == 512
    first = [event(f"a{k}") for k in range(1500)]  # 512 + 512 + 256 + 128 + 64 + 16 + 8 + 4
    assert store.events.append(first) == list(range(1, 1501))
    again = [event(f"b{k}") for k in range(700)]
    again.insert(333, first[42])  # an id already logged: the slower path, chunked too
    seqs = store.events.append(again)
    assert seqs[333] == 43
    assert seqs[:333] + seqs[334:] == list(range(1501, 2201))
    logged = [(s, e.id) for s, e in store.events.read_after(0, 5000)]
    expected = [e.id for e in first] + [e.id for e in again[:333] + again[334:]]
    assert logged == list(zip(range(1, 2201), expected, strict=True))


def test_events_round_trip_unchanged(store: Store) -> None:
    e = event(
        "prefect.flow-run.Completed",
        related=[{"prefect.resource.id": "d.1", "prefect.resource.role": "deployment"}],
        payload={"n": 1, "nested": {"ok": True}},
        follows=str(uuid.uuid4()),
        received="2026-03-01T09:00:01.5Z",
    )
    [seq] = store.events.append([e])

    assert store.events.read_after(0) == [(seq, e)]


def test_read_events_after_pages_through_the_log(store: Store) -> None:
    events = [event(f"e.{i}") for i in range(25)]
    store.events.append(events)

    pages: list[list[tuple[int, Event]]] = []
    after = 0
    while page := store.events.read_after(after, limit=10):
        pages.append(page)
        after = page[-1][0]

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [e for p in pages for _, e in p] == events
    assert store.events.read_after(after) == []


def test_filter_by_glob_names(store: Store) -> None:
    store.events.append(
        [
            event("prefect.flow-run.Running"),
            event("prefect.flow-run.Completed"),
            event("prefect.task-run.Running"),
            event("prefect.flow-run-x.Other"),
            event("marmot.automation.triggered"),
        ]
    )

    def names(*patterns: str) -> list[str]:
        found = store.events.filter(names=patterns, descending=False)
        return [e.event for _, e in found]

    assert names("prefect.flow-run.*") == [
        "prefect.flow-run.Running",
        "prefect.flow-run.Completed",
    ]
    assert names("prefect.*.Running") == ["prefect.flow-run.Running", "prefect.task-run.Running"]
    assert names("*.Running", "marmot.automation.triggered") == [
        "prefect.flow-run.Running",
        "prefect.task-run.Running",
        "marmot.automation.triggered",
    ]
    assert names("prefect.flow-run.Complete?") == ["prefect.flow-run.Completed"]
    assert names("prefect.flow-run.running") == []
    assert len(names("*")) == 5


def test_filter_with_glob_respects_limit_after_matching(store: Store) -> None:
    # Many rows pass the SQL prefilter ("a.*") but only some match the full pattern.
    store.events.append([event(f"a.{i}.{'done' if i % 3 == 0 else 'skip'}") for i in range(30)])

    found = store.events.filter(names=["a.*.done"], limit=4, descending=False)

    assert [e.event for _, e in found] == ["a.0.done", "a.3.done", "a.6.done", "a.9.done"]


def test_filter_by_a_common_name_in_a_large_log_returns_the_newest(store: Store) -> None:
    # Enough matches that the store walks the time index instead of the name index.
    at = [T0 + timedelta(seconds=i) for i in range(3000)]
    store.events.append([event("common.x" if i % 50 else "rare", at=t) for i, t in enumerate(at)])

    common = store.events.filter(names=["common.*"], limit=3)
    exact = store.events.filter(names=["common.x"], limit=3, descending=False)
    rare = store.events.filter(names=["rare"], limit=2)

    assert [e.occurred for _, e in common] == [at[2999], at[2998], at[2997]]
    assert [e.occurred for _, e in exact] == [at[1], at[2], at[3]]
    assert [e.occurred for _, e in rare] == [at[2950], at[2900]]


def test_filter_by_resource_and_time_ordered_by_occurred(store: Store) -> None:
    times = [T0 + timedelta(minutes=m) for m in (5, 1, 3, 2, 4)]
    store.events.append([event(resource=f"r.{i % 2}", at=t) for i, t in enumerate(times)])

    newest_first = store.events.filter()
    oldest_first = store.events.filter(descending=False)
    window = store.events.filter(
        since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4), descending=False
    )
    r0 = store.events.filter(resource_id="r.0", limit=2)

    assert [e.occurred for _, e in newest_first] == sorted(times, reverse=True)
    assert [e.occurred for _, e in oldest_first] == sorted(times)
    assert [e.occurred.minute for _, e in window] == [2, 3, 4]
    assert [(e.resource_id, e.occurred.minute) for _, e in r0] == [("r.0", 5), ("r.0", 4)]


def test_trim_deletes_old_rows_and_never_reuses_seqs(store: Store) -> None:
    store.events.append([event(at=T0 + timedelta(minutes=m)) for m in range(10)])

    assert store.events.trim(keep_after_seq=3) == 3
    assert store.events.trim(older_than=T0 + timedelta(minutes=5)) == 2
    # Both: only rows at or below the seq AND older than the time go.
    assert store.events.trim(keep_after_seq=7, older_than=T0 + timedelta(minutes=7)) == 2
    assert [seq for seq, _ in store.events.read_after(0)] == [8, 9, 10]

    assert store.events.trim(keep_after_seq=100) == 3
    assert store.events.count() == 0
    assert store.events.last_seq() == 10
    assert store.events.append([event()]) == [11]
    with pytest.raises(ValueError):
        store.events.trim()


def test_concurrent_appends_get_unique_gap_free_seqs_per_call(store: Store) -> None:
    calls: list[list[int]] = []
    record = threading.Lock()
    start = threading.Barrier(4)

    def writer() -> None:
        start.wait()
        for _ in range(25):
            seqs = store.events.append([event() for _ in range(20)])
            with record:
                calls.append(seqs)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(calls) == 100
    for seqs in calls:
        assert seqs == list(range(seqs[0], seqs[0] + 20))
    everything = sorted(s for seqs in calls for s in seqs)
    assert everything == list(range(1, 2001))
    assert store.events.count() == 2000


# -- checkpoints, action log, meta -------------------------------------------------------


def test_checkpoints_save_load_and_overwrite(store: Store) -> None:
    assert store.checkpoints.load("actor-1") is None

    store.checkpoints.save("actor-1", 10, b"\x00state-1")
    store.checkpoints.save("actor-2", 3, b"other")
    store.checkpoints.save("actor-1", 42, b"state-2\xff")

    assert store.checkpoints.load("actor-1") == (42, b"state-2\xff")
    assert store.checkpoints.load("actor-2") == (3, b"other")
    store.checkpoints.delete("actor-1")
    assert store.checkpoints.load("actor-1") is None


def test_claim_action_returns_true_then_false(store: Store) -> None:
    automation_id = uuid.uuid4()
    claim: dict[str, Any] = {
        "firing_id": "f-1",
        "automation_id": str(automation_id),
        "action_index": 0,
    }

    assert store.actions.claim("f-1:0", **claim) is True
    assert store.actions.claim("f-1:0", **claim) is False

    store.actions.finish("f-1:0", "succeeded", "did nothing, as asked")
    [record] = store.actions.read(automation_id=automation_id)
    assert (record.key, record.firing_id, record.action_index) == ("f-1:0", "f-1", 0)
    assert (record.status, record.detail) == ("succeeded", "did nothing, as asked")
    assert store.actions.read(automation_id=uuid.uuid4()) == []
    with pytest.raises(NotFound):
        store.actions.finish("never-claimed", "failed")


def test_claim_is_exclusive_across_connections(tmp_path: Path) -> None:
    # Executors open the database file separately; only one of them may act.
    with Store.open(tmp_path / "m.db") as one, Store.open(tmp_path / "m.db") as two:
        claim: dict[str, Any] = {"firing_id": "f", "automation_id": "a", "action_index": 1}
        assert one.actions.claim("k", **claim) is True
        assert two.actions.claim("k", **claim) is False


def test_meta_values_are_set_and_replaced(store: Store) -> None:
    assert store.db.get_meta("events_clock") is None

    store.db.set_meta("events_clock", "1")
    store.db.set_meta("events_clock", "2")

    assert store.db.get_meta("events_clock") == "2"


# -- durability ---------------------------------------------------------------------------


def test_store_survives_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "marmot.db"
    a = automation()
    e = event()
    with Store.open(path) as store:
        store.automations.create(a)
        store.events.append([e])
        store.checkpoints.save("actor", 1, b"s")
        store.actions.claim("k", firing_id="f", automation_id=str(a.id), action_index=0)
        store.db.set_meta("k", "v")

    with Store.open(path) as store:
        assert store.automations.read(a.id).automation == a
        assert store.events.read_after(0) == [(1, e)]
        assert store.events.last_seq() == 1
        assert store.checkpoints.load("actor") == (1, b"s")
        assert store.actions.claim("k", firing_id="f", automation_id="x", action_index=0) is False
        assert store.db.get_meta("k") == "v"
        assert store.db.schema_version() == SCHEMA_VERSION

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_store_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "marmot.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()

    with pytest.raises(Unsupported, match="schema version"):
        Store.open(path)
