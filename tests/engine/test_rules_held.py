"""SEMANTICS §3.3's inclusive sweep and §3.4's held expect events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgpack

from marmot.engine.timestamps import US_PER_S, to_us
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.held import RETENTION_US, HeldEvents
from tests.engine.factories import at, automation, buckets, evaluator, event

FOR_EACH = ["prefect.resource.id"]


def _job(**fields: Any) -> dict[str, Any]:
    """Proactive: after `started`, expect `finished` within 30 s, per resource."""
    trigger = {
        "type": "event",
        "posture": "Proactive",
        "after": ["started"],
        "expect": ["finished"],
        "for_each": FOR_EACH,
        "threshold": 1,
        "within": 30,
    }
    return {**trigger, **fields}


def _heartbeat(threshold: int) -> dict[str, Any]:
    return {
        "type": "event",
        "posture": "Proactive",
        "after": ["heartbeat"],
        "expect": ["heartbeat", "stopped"],
        "for_each": FOR_EACH,
        "threshold": threshold,
        "within": 20,
    }


def _held(ev: Evaluator, path: str = "trigger") -> dict[str, int]:
    for view in ev.explain().triggers:
        if view.path == path:
            return {h.labels["prefect.resource.id"]: h.count for h in view.held}
    raise KeyError(path)


# -- §3.3: the sweep is inclusive -------------------------------------------------------------


def test_immediate_bucket_is_swept_exactly_sixty_seconds_after_its_end() -> None:
    ev = evaluator(
        {"type": "event", "expect": ["door"], "for_each": FOR_EACH, "threshold": 2, "within": 0}
    )
    ev.apply([event("door", 5)])
    # A Reactive bucket's only change is its sweep, due at end + 60 s, not a µs later.
    assert ev.next_deadline() == at(65)

    assert ev.advance(at(65), at(65)) == []

    assert buckets(ev) == []
    assert ev.apply([event("door", 65)]) == []  # a new count starts at 1


def test_bucket_one_microsecond_short_of_the_boundary_stays() -> None:
    ev = evaluator({"type": "event", "expect": ["door"], "threshold": 2, "within": 0})
    first = event("door", 5)
    ev.apply([first])
    almost = at(65) - timedelta(microseconds=1)

    ev.advance(almost, almost)

    [firing] = ev.apply([event("door", 64)])
    assert firing.event_id != first.id


def test_within_zero_after_bucket_stops_counting_sixty_seconds_after_it_opens() -> None:
    trigger = {
        "type": "event",
        "after": ["deploy"],
        "expect": ["crash"],
        "for_each": FOR_EACH,
        "threshold": 1,
        "within": 0,
    }
    swept, kept = evaluator(trigger), evaluator(trigger)
    for ev in (swept, kept):
        ev.apply([event("deploy", 5)])
    swept.advance(at(65), at(65))
    kept.advance(at(64), at(64))

    assert swept.apply([event("crash", 65)]) == []
    assert len(kept.apply([event("crash", 64)])) == 1


# -- §3.4: held expect events ------------------------------------------------------------------


def test_expect_event_processed_before_its_after_event_counts_in_the_window() -> None:
    ev = evaluator(_job())
    finished = event("finished", 20, "job.a")

    assert ev.apply([finished]) == []  # no bucket yet: held
    assert _held(ev) == {"job.a": 1}
    ev.apply([event("started", 10, "job.a", received=22)])

    [bucket] = buckets(ev)
    assert (bucket.start, bucket.end, bucket.count) == (at(10), at(40), 1)
    assert ev.advance(at(40), at(40)) == []  # count 1 is not below the threshold


def test_held_event_outside_the_window_is_not_counted() -> None:
    ev = evaluator(_job())
    started = event("started", 35, "job.c")
    ev.apply([event("finished", 33, "job.c"), started])

    assert buckets(ev)[0].count == 0
    [firing] = ev.advance(at(65), at(65))
    assert firing.event_id == started.id


def test_held_event_counts_again_in_a_window_created_later() -> None:
    ev = evaluator(_job())
    ev.apply([event("started", 40, "job.d"), event("finished", 50, "job.d")])
    assert buckets(ev)[0].count == 1
    ev.advance(at(41), at(41))  # the full bucket is removed
    assert buckets(ev) == []

    ev.apply([event("started", 45, "job.d", received=55)])

    assert buckets(ev)[0].count == 1  # the held `finished` counts in [45, 75) too
    assert ev.advance(at(75), at(75)) == []


def test_an_expect_only_event_held_already_is_not_evaluated_again() -> None:
    ev = evaluator(_job(threshold=2))
    ev.apply([event("started", 0, "job")])
    finished = event("finished", 5, "job")

    ev.apply([finished])
    ev.apply([finished])  # delivered twice

    assert buckets(ev)[0].count == 1
    assert _held(ev) == {"job": 1}


def test_a_trigger_without_after_holds_nothing() -> None:
    ev = evaluator({**_job(), "after": []})
    ev.apply([event("finished", 5, "job")])
    assert _held(ev) == {}
    assert ev.leaves[0].held is None


def test_same_event_reset_counts_held_events_and_keeps_a_racing_terminal_state() -> None:
    silent, quiet = evaluator(_heartbeat(1)), evaluator(_heartbeat(2))
    stopped = event("stopped", 20, "worker.1")
    stream = [
        event("heartbeat", 5, "worker.1"),
        stopped,
        event("heartbeat", 15, "worker.1", received=22),
    ]
    for ev in (silent, quiet):
        ev.apply(stream)
        [bucket] = buckets(ev)
        # The late heartbeat resets the window to [15, 35), counting the held `stopped`.
        assert (bucket.start, bucket.end, bucket.count) == (at(15), at(35), 1)
        assert bucket.last_event_id == stopped.id

    assert silent.advance(at(35), at(35)) == []
    [firing] = quiet.advance(at(35), at(35))
    assert firing.event_id == stopped.id


def test_reset_takes_the_resetting_event_when_the_last_one_is_older() -> None:
    ev = evaluator(_heartbeat(2))
    late_heartbeat = event("heartbeat", 24, "w", received=26)
    ev.apply([event("heartbeat", 5, "w"), event("stopped", 20, "w"), late_heartbeat])

    [bucket] = buckets(ev)
    assert bucket.last_event_id == late_heartbeat.id


def test_proactive_without_for_each_counts_held_events_in_its_first_window() -> None:
    ev = evaluator({**_job(), "for_each": []})
    ev.apply([event("finished", 3, "job")])
    assert buckets(ev) == []

    # The key-() bucket [0, 30) opens counting the held event: full, so removed at once.
    assert ev.advance(at(0), at(0)) == []
    assert buckets(ev) == []

    ev.advance(at(4), at(4))  # [4, 34) opens after it
    assert buckets(ev)[0].count == 0
    assert len(ev.advance(at(34), at(34))) == 1


def test_held_events_work_for_children_of_a_compound_trigger() -> None:
    child = _job()
    ev = evaluator(
        {
            "type": "compound",
            "require": "all",
            "triggers": [child, {"type": "event", "expect": ["other"], "threshold": 1}],
        }
    )
    ev.apply([event("finished", 20, "job.a"), event("started", 10, "job.a", received=22)])

    assert _held(ev, "trigger.triggers[0]") == {"job.a": 1}
    assert buckets(ev, "trigger.triggers[0]")[0].count == 1


def test_held_events_survive_snapshot_and_restore() -> None:
    first = evaluator(_job())
    first.apply([event("finished", 20, "job.a")])
    second = Evaluator(automation(_job()))
    second.restore(msgpack.unpackb(msgpack.packb(first.snapshot())))

    second.apply([event("started", 10, "job.a", received=22)])

    assert buckets(second)[0].count == 1
    assert _held(second) == {"job.a": 1}


def test_snapshot_without_held_events_restores_to_none() -> None:
    first = evaluator(_job())
    first.apply([event("finished", 20, "job.a")])
    state = first.snapshot()
    del state["held"]
    second = Evaluator(automation(_job()))

    second.restore(state)

    assert _held(second) == {}


# -- §3.4: retention ----------------------------------------------------------------------------


def _us(seconds: float) -> int:
    return round(seconds * US_PER_S)


def test_held_events_older_than_the_horizon_behind_the_newest_are_dropped() -> None:
    held = HeldEvents(threshold=1, within_us=_us(30))
    old, new = event("x", 0), event("x", 1801)
    held.hold(("k",), old.id, _us(0), _us(0))
    held.hold(("k",), new.id, _us(1801), _us(1801))

    assert not held.is_held(("k",), old.id, _us(0))
    assert held.count(("k",), 0, _us(2000)) == 1


def test_horizon_is_the_window_when_it_is_longer_than_thirty_minutes() -> None:
    held = HeldEvents(threshold=1, within_us=_us(3600))
    held.hold(("k",), event("x", 0).id, 0, 0)
    held.hold(("k",), event("x", 3000).id, _us(3000), _us(3000))

    assert held.count(("k",), 0, _us(3600)) == 2


def test_each_slot_keeps_its_first_and_last_threshold_events() -> None:
    held = HeldEvents(threshold=1, within_us=_us(10))
    ids = [event("x", t).id for t in (0, 2, 4, 6)]
    for t, event_id in zip((0, 2, 4, 6), ids, strict=True):
        held.hold(("k",), event_id, _us(t), _us(t))

    held_now = [held.is_held(("k",), i, _us(t)) for t, i in zip((0, 2, 4, 6), ids, strict=True)]
    assert held_now == [True, False, False, True]
    # Any window still counts at least min(threshold, events that occurred in it).
    for start in range(-9, 10):
        occurred = sum(1 for t in (0, 2, 4, 6) if start <= t < start + 10)
        assert held.count(("k",), _us(start), _us(start + 10)) >= min(1, occurred)


def test_sweep_drops_events_held_thirty_minutes_ago_unless_a_bucket_is_open() -> None:
    held = HeldEvents(threshold=1, within_us=_us(30))
    held.hold(("a",), event("x", 0, "a").id, 0, 0)
    held.hold(("b",), event("x", 0, "b").id, 0, 0)
    assert held.next_deadline() == RETENTION_US + 1
    open_end = RETENTION_US + _us(100)

    held.sweep(RETENTION_US, lambda key: None)  # not yet: strictly older only
    assert len(held) == 2
    held.sweep(RETENTION_US + 1, lambda key: open_end if key == ("b",) else None)

    assert [key for key, _ in held.items()] == [("b",)]
    assert held.next_deadline() == open_end
    held.sweep(open_end, lambda key: open_end)  # that bucket has ended by now
    assert len(held) == 0
    assert held.next_deadline() is None


def test_evaluator_asks_to_be_woken_for_the_held_sweep() -> None:
    ev = evaluator(_job())
    ev.apply([event("finished", 0, "job")])

    assert ev.next_deadline_us() == to_us(at(0)) + RETENTION_US + 1
    ev.advance(at(1801), at(1801))

    assert _held(ev) == {}
    assert ev.next_deadline() is None


def test_a_threshold_of_zero_holds_nothing_and_explains_cleanly() -> None:
    # Prefect keeps the first and last `threshold` events of a slot: none at 0.
    ev = evaluator(_job(threshold=0))
    ev.apply([event("finished", 5, "job")])
    assert _held(ev) == {}
    assert ev.explain().triggers[0].held == []


def test_a_key_bucket_deleted_as_it_opens_is_next_due_a_microsecond_later_not_now() -> None:
    # Without for_each, proactive evaluation opens the ()-bucket (§3.3 step 1); a
    # held event at that instant fills it and step 2 deletes it. Evaluating again
    # at the same as_of would do the same for ever (a daemon's timer, replay and
    # backtest at tick 0 spun there): the next deadline is the next microsecond.
    ev = evaluator(_heartbeat(threshold=1) | {"for_each": []})
    ev.apply([event("stopped", 100)])  # expect-only: held
    assert ev.next_deadline_us() == -1  # no ()-bucket yet: due now
    ev.advance(at(100), at(100))
    assert buckets(ev) == []  # opened with the held event, so deleted at once
    assert ev.next_deadline_us() == to_us(at(100)) + 1
    ev.advance(at(100) + timedelta(microseconds=1), at(100))
    opened = buckets(ev)
    assert len(opened) == 1 and opened[0].count == 0  # the held event is before it
    # An event the trigger is interested in makes it due at once again.
    ev.apply([event("stopped", 101)])
    assert ev.next_deadline_us() is not None
