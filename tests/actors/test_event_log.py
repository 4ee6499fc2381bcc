"""The event log against a real SQLite file: pages, many name patterns, re-sent ids."""

from __future__ import annotations

import logging
import random
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from marmot.actors.store import Store
from marmot.actors.store.events import LogPosition
from marmot.engine.clock import ManualClock
from marmot.engine.models.events import Event

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "marmot.db") as opened:
        yield opened


def event(name: str = "x", *, at: datetime = T0, **fields: Any) -> Event:
    return Event.model_validate(
        {
            "occurred": at.isoformat(),
            "event": name,
            "resource": {"prefect.resource.id": fields.pop("resource", "r.1")},
            **fields,
        }
    )


# -- many name patterns ------------------------------------------------------------------


def test_filter_takes_a_thousand_glob_patterns(store: Store) -> None:
    """SQLite refuses an OR of 1,000 terms ("expression tree is too large")."""
    store.events.append([event(f"app.{i}.done", at=T0 + timedelta(seconds=i)) for i in range(50)])
    patterns = [f"app.{i}.*" for i in range(1000)]

    found = store.events.filter(names=patterns, limit=100)

    assert [e.event for _, e in found] == [f"app.{i}.done" for i in reversed(range(50))]


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("by_seq", [True, False])
def test_many_patterns_match_as_fnmatch_in_order_each_event_once(
    store: Store, descending: bool, by_seq: bool
) -> None:
    rng = random.Random(7)
    words = ["run", "task", "flow", "deploy", "work"]
    events = [
        event(
            f"{rng.choice(words)}.{rng.randrange(40)}.{rng.choice(words)}",
            at=T0 + timedelta(seconds=rng.randrange(30)),  # ties in occurred
        )
        for _ in range(600)
    ]
    store.events.append(events)
    # Exact names, prefixes and inner wildcards, several matching the same events:
    # over 64 patterns, so they run as several statements merged.
    patterns = [f"{w}.{n}.*" for w in words for n in range(0, 40, 3)]
    patterns += [f"*.{n}.run" for n in range(10)] + ["task.1?.flow", "flow.[0-4].*"]
    patterns += [f"work.{n}.work" for n in range(40)]
    assert len(patterns) > 2 * 60

    found = store.events.filter(names=patterns, limit=10_000, descending=descending, by_seq=by_seq)

    logged = list(enumerate(events, start=1))
    expected = [(s, e) for s, e in logged if any(fnmatchcase(e.event, p) for p in patterns)]
    if by_seq:
        expected.sort(key=lambda row: row[0], reverse=descending)
    else:
        expected.sort(key=lambda row: (row[1].occurred, row[0]), reverse=descending)
    assert [s for s, _ in found] == [s for s, _ in expected]
    limited = store.events.filter(names=patterns, limit=7, descending=descending, by_seq=by_seq)
    assert [s for s, _ in limited] == [s for s, _ in expected[:7]]


@pytest.mark.parametrize("host_parameters", [None, 999])
def test_any_number_of_plain_names_is_served(tmp_path: Path, host_parameters: int | None) -> None:
    """Plain names go to SQL in IN lists of 500, or are matched as the rows are read
    when there are more than one statement may bind (999 before SQLite 3.32)."""
    with Store.open(tmp_path / "marmot.db") as store:
        if host_parameters is not None:
            store.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, host_parameters)
        log = type(store.events)(store.db)
        log.append([event(f"n.{i}", at=T0 + timedelta(seconds=i)) for i in range(0, 3000, 7)])
        names = [f"n.{i}" for i in range(1500)]

        found = log.filter(names=names, limit=1000, descending=False)

    assert [e.event for _, e in found] == [f"n.{i}" for i in range(0, 1500, 7)]


# -- pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("by_seq", [True, False])
def test_pages_follow_each_other_without_gaps_or_repeats(
    store: Store, descending: bool, by_seq: bool
) -> None:
    # Occurred times out of arrival order, with ties.
    times = [T0 + timedelta(seconds=(i * 7) % 11) for i in range(40)]
    store.events.append([event(f"e.{i}", at=t) for i, t in enumerate(times)])
    whole = store.events.filter(limit=1000, descending=descending, by_seq=by_seq)

    pages: list[list[int]] = []
    after: LogPosition | None = None
    while True:
        page = store.events.page(limit=6, descending=descending, by_seq=by_seq, after=after)
        pages.append([s for s, _ in page.rows])
        if not page.has_more:
            break
        after = LogPosition.of(*page.rows[-1])

    assert [s for p in pages for s in p] == [s for s, _ in whole]
    assert [len(p) for p in pages] == [6] * 6 + [4]


def test_a_page_stops_at_its_byte_budget_but_holds_one_event_at_least(store: Store) -> None:
    store.events.append(
        [
            event(f"e.{i}", at=T0 + timedelta(seconds=i), payload={"p": "x" * 1000})
            for i in range(20)
        ]
    )

    page = store.events.page(limit=20, descending=False, max_bytes=5_000)
    assert [e.event for _, e in page.rows] == ["e.0", "e.1", "e.2", "e.3"]
    assert page.has_more

    one = store.events.page(limit=20, descending=False, max_bytes=10)
    assert [e.event for _, e in one.rows] == ["e.0"]
    assert one.has_more

    last = store.events.page(limit=20, after=LogPosition.of(*page.rows[1]), max_bytes=10)
    assert [e.event for _, e in last.rows] == ["e.0"]  # descending: only e.0 is before e.1
    assert not last.has_more


def test_a_full_page_tells_whether_more_events_follow(store: Store) -> None:
    store.events.append([event(f"e.{i}") for i in range(5)])

    assert store.events.page(limit=5).has_more is False
    assert store.events.page(limit=4).has_more is True
    assert store.events.page(names=["e.*"], limit=5).has_more is False


# -- re-sent ids ---------------------------------------------------------------------------


def test_a_resent_id_with_other_content_is_acknowledged_counted_and_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    counted: list[int] = []
    store.events.count_conflicts_with(counted.append)
    first = event("deploy.done", payload={"n": 1})
    [seq] = store.events.append([first])

    changed = first.model_copy(update={"payload": {"n": 2}})
    with caplog.at_level(logging.WARNING, "marmot.actors.store.events"):
        again = store.events.append([event("other"), changed])

    assert again == [seq + 1, seq]  # acknowledged with the first one's number
    assert store.events.read_after(0)[0] == (seq, first)  # the first content stays
    assert counted == [1]
    [line] = caplog.records
    assert str(first.id) in line.getMessage()
    assert line.__dict__["reason"] == "duplicate_id_other_content"


def test_a_resent_copy_stamped_again_on_arrival_is_no_conflict(store: Store) -> None:
    counted: list[int] = []
    store.events.count_conflicts_with(counted.append)
    first = event("deploy.done", received=T0.isoformat())
    store.events.append([first])

    later = first.model_copy(update={"received": T0 + timedelta(minutes=5)})
    store.events.append([later, first])

    assert counted == []


def test_repeats_with_other_content_in_one_batch_are_counted_too(store: Store) -> None:
    counted: list[int] = []
    store.events.count_conflicts_with(counted.append)
    first = event("a", payload={"n": 1})

    seqs = store.events.append([first, first.model_copy(update={"event": "b"}), first])

    assert seqs == [1, 1, 1]
    assert counted == [1]


def test_conflicts_are_logged_once_per_interval_with_the_count_since(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(T0)
    with Store.open(tmp_path / "marmot.db") as store:
        log = type(store.events)(store.db, clock=clock)
        original = [event(f"e.{i}", payload={"v": 0}) for i in range(4)]
        log.append(original)
        changed = [e.model_copy(update={"payload": {"v": 1}}) for e in original]

        with caplog.at_level(logging.WARNING, "marmot.actors.store.events"):
            log.append(changed[:1])
            log.append(changed[1:3])  # within the interval: counted, not logged
            clock.advance(timedelta(seconds=10))
            log.append(changed[3:])

    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("1 event(s)")
    assert messages[1].startswith("3 event(s)")
    assert str(uuid.UUID(str(original[3].id))) in messages[1]
