"""SEMANTICS §6: reactive time, firing time, the events clock and causal ordering."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from marmot.engine.causal import CausalOrdering
from marmot.engine.clock import EventsClock, ManualClock
from marmot.engine.timestamps import to_us
from tests.engine.factories import at, evaluator, event

LEADER = UUID("00000000-0000-4000-8000-00000000000a")
FOLLOWER = UUID("00000000-0000-4000-8000-00000000000b")
SECOND_FOLLOWER = UUID("00000000-0000-4000-8000-00000000000c")


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(at(0))

    assert clock.now() == at(0)
    assert clock.advance(5) == at(5)
    assert clock.advance(timedelta(seconds=2)) == at(7)
    clock.set(at(3))
    assert clock.now() == at(3)


# -- reactive time and firing time ----------------------------------------------------------


def test_reactive_evaluation_uses_occurred_as_now() -> None:
    ev = evaluator({"type": "event", "expect": ["x"], "threshold": 2, "within": 10})

    # Processed 100 s apart, but they occurred 5 s apart: the same 10 s window.
    assert ev.apply([event("x", 0, received=100)]) == []
    [firing] = ev.apply([event("x", 5, received=200)])

    assert firing.event_id == event("x", 5, received=200).id


def test_firing_time_is_processing_clock() -> None:
    ev = evaluator({"type": "event", "expect": ["x"]})

    [received] = ev.apply([event("x", 0, received=42)])
    [unstamped] = ev.apply([event("x", 1)])

    assert received.fired_at == at(42)
    assert unstamped.fired_at == at(1)


# -- the events clock -------------------------------------------------------------------------


def test_events_clock_offset_is_zero_before_any_event() -> None:
    clock = EventsClock()

    assert clock.offset() == timedelta(0)
    assert clock.as_of(at(10)) == at(10)


def test_events_clock_offset_is_events_clock_minus_last_seen() -> None:
    wall = ManualClock(at(5))
    clock = EventsClock()

    clock.observe(at(0), wall.now())
    assert clock.offset() == timedelta(seconds=-5)
    assert clock.as_of(at(10)) == at(5)

    # An older event does not move the events clock back, but last_seen advances.
    clock.observe(at(-30), wall.advance(15))
    assert clock.offset() == timedelta(seconds=-20)
    assert clock.as_of(wall.now()) == at(0)

    clock.observe(at(18), wall.advance(1))
    assert clock.offset() == timedelta(seconds=-3)
    assert clock.as_of(at(30)) == at(27)


def test_future_event_is_clamped_to_wall_clock() -> None:
    clock = EventsClock()

    clock.observe(at(100), at(30))

    assert clock.offset() == timedelta(0)
    assert clock.as_of(at(40)) == at(40)


# -- causal ordering -----------------------------------------------------------------------------


def test_follower_waits_for_leader() -> None:
    wall = ManualClock(at(0))
    causal = CausalOrdering()
    follower = event("second", 1, id=FOLLOWER, follows=LEADER)
    leader = event("first", 0, id=LEADER)

    assert causal.admit(follower, wall.now()) == []
    assert causal.waiting == 1
    assert causal.next_deadline() == at(900)

    ready = causal.admit(leader, wall.advance(3))

    assert [e.id for e in ready] == [LEADER, FOLLOWER]
    assert ready[1].received == at(3)
    assert causal.waiting == 0
    assert causal.next_deadline() is None


def test_followers_are_released_in_causal_order() -> None:
    causal = CausalOrdering()
    grandchild = event("third", 2, id=SECOND_FOLLOWER, follows=FOLLOWER)
    child = event("second", 1, id=FOLLOWER, follows=LEADER)

    assert causal.admit(grandchild, at(0)) == []
    assert causal.admit(child, at(1)) == []
    ready = causal.admit(event("first", 0, id=LEADER), at(2))

    assert [e.id for e in ready] == [LEADER, FOLLOWER, SECOND_FOLLOWER]


def test_follower_of_processed_leader_is_evaluated_at_once() -> None:
    causal = CausalOrdering()
    follower = event("second", 1, id=FOLLOWER, follows=LEADER)

    assert [e.id for e in causal.admit(event("first", 0, id=LEADER), at(0))] == [LEADER]
    assert [e.id for e in causal.admit(follower, at(60))] == [FOLLOWER]


def test_lost_follower_is_evaluated_after_lookback() -> None:
    wall = ManualClock(at(0))
    causal = CausalOrdering()
    follower = event("second", 1, id=FOLLOWER, follows=LEADER)

    assert causal.admit(follower, wall.now()) == []
    assert causal.release_lost(wall.advance(899)) == []
    assert causal.waiting == 1

    released = causal.release_lost(wall.advance(2))

    assert [e.id for e in released] == [FOLLOWER]
    assert released[0].received == at(901)
    assert causal.waiting == 0
    assert causal.next_deadline() is None
    # The leader arriving afterwards is evaluated on its own.
    assert [e.id for e in causal.admit(event("first", 0, id=LEADER), wall.now())] == [LEADER]


def test_an_event_delivered_twice_is_evaluated_once() -> None:
    ordering = CausalOrdering()
    first = event("x", 0)
    assert ordering.admit(first, at(1)) == [first]
    assert ordering.is_duplicate(first.id, to_us(at(2)))
    assert ordering.duplicates == 1
    # Prefect remembers processed ids for 30 minutes, not the 15-minute lookback.
    assert ordering.is_duplicate(first.id, to_us(at(20 * 60)))
    assert not ordering.is_duplicate(first.id, to_us(at(31 * 60)))


def test_a_bounded_events_clock_trails_the_wall_clock_at_most_by_its_bound() -> None:
    # One publisher sends events an hour old, once a second: under Prefect's rule
    # alone the offset grows without end; with the bound it stops at -60 s.
    bounded, unbounded = EventsClock(max_lag_us=60_000_000), EventsClock()
    for clock in (bounded, unbounded):
        clock.observe(at(0), at(0))
        for second in range(1, 121):
            clock.observe(at(second - 3600), at(second))
    assert unbounded.offset() == timedelta(seconds=-120)
    assert bounded.offset() == timedelta(seconds=-60)
    assert bounded.behind == 120 and unbounded.behind == 0
    # Events within the bound keep Prefect's rule exactly.
    exact = EventsClock(max_lag_us=60_000_000)
    exact.observe(at(0), at(10))
    assert exact.offset() == timedelta(seconds=-10)


def test_followers_that_wait_for_each_other_are_released_at_once_when_asked() -> None:
    a_id, b_id = UUID(int=0xA), UUID(int=0xB)
    a = event("a", 0, id=a_id, follows=b_id)
    b = event("b", 1, id=b_id, follows=a_id)
    prefect = CausalOrdering()
    assert prefect.admit(a, at(0)) == [] and prefect.admit(b, at(1)) == []  # both wait 15 min
    marmot = CausalOrdering(release_cycles=True)
    assert marmot.admit(a, at(0)) == []
    assert [e.id for e in marmot.admit(b, at(1))] == [b_id, a_id]
    assert marmot.cycles == 1 and marmot.waiting == 0
    # An event that follows itself never waits, in Prefect too.
    alone = event("c", 0, id=UUID(int=0xC), follows=UUID(int=0xC))
    assert prefect.admit(alone, at(2)) == [alone]


def test_followers_past_the_bound_are_released_oldest_first() -> None:
    causal = CausalOrdering(max_waiting=2)
    followers = [event("f", t, id=UUID(int=100 + t), follows=UUID(int=999)) for t in range(3)]
    for t, follower in enumerate(followers):
        assert causal.admit(follower, at(t)) == []
    released = causal.over_bound(at(3))
    assert [e.id for e in released] == [followers[0].id]
    assert causal.waiting == 2 and causal.evicted == 1
