"""SEMANTICS §3: how event triggers count, fire and reset, reactively and proactively."""

from __future__ import annotations

from typing import Any

from marmot.engine.models.triggers import Posture
from marmot.engine.triggers.evaluator import DUE_NOW, Evaluator
from tests.engine.factories import at, buckets, evaluator, event

FOR_EACH_RESOURCE = ["prefect.resource.id"]


def _reactive(**fields: Any) -> dict[str, Any]:
    return {"type": "event", "posture": "Reactive", **fields}


def _proactive(**fields: Any) -> dict[str, Any]:
    return {"type": "event", "posture": "Proactive", **fields}


# -- §3.1 / §3.2: reactive ------------------------------------------------------------------


def test_reactive_fires_when_count_reaches_threshold() -> None:
    ev = evaluator(_reactive(expect=["x"], threshold=3, within=60))
    third = event("x", 2)

    assert ev.apply([event("x", 0), event("x", 1)]) == []
    [firing] = ev.apply([third])

    assert firing.event_id == third.id
    assert firing.triggering_event == third
    assert dict(firing.labels) == {}
    assert firing.fired_at == at(2)
    assert firing.trigger_path == "trigger"
    assert firing.posture is Posture.Reactive


def test_expected_event_bucket_reaches_fifteen_minutes_back() -> None:
    ev = evaluator(_reactive(expect=["x"], threshold=2, within=60))
    late = event("x", -600, received=1)

    assert ev.apply([event("x", 0)]) == []
    [bucket] = buckets(ev)
    assert (bucket.start, bucket.end, bucket.count) == (at(-900), at(60), 1)
    # Older than the lookback: before the bucket's start, so not counted.
    assert ev.apply([event("x", -901, received=1)]) == []
    assert buckets(ev)[0].count == 1

    [firing] = ev.apply([late])

    assert firing.event_id == late.id
    assert firing.fired_at == at(1)


def test_event_before_bucket_start_is_ignored() -> None:
    ev = evaluator(_reactive(after=["start"], expect=["x"], threshold=1, within=60))
    in_window = event("x", 20)

    ev.apply([event("start", 10)])
    assert ev.apply([event("x", 5, received=12)]) == []
    [bucket] = buckets(ev)
    assert (bucket.start, bucket.count) == (at(10), 0)

    [firing] = ev.apply([in_window])

    assert firing.event_id == in_window.id


def test_immediate_trigger_counts_every_event() -> None:
    ev = evaluator(_reactive(expect=["x"], threshold=3, within=0))
    stream = [event("x", t) for t in (0, 1000, 2000, 3000, 4000, 5000)]

    assert ev.apply(stream[:1]) == []
    [bucket] = buckets(ev)
    # The window [occurred - 15 min, occurred) is already over, yet later events count.
    assert (bucket.start, bucket.end, bucket.count) == (at(-900), at(0), 1)

    firings = ev.apply(stream[1:])

    assert [f.event_id for f in firings] == [stream[2].id, stream[5].id]
    assert buckets(ev) == []


def test_reactive_fires_once_per_window() -> None:
    ev = evaluator(_reactive(expect=["x"], threshold=2, within=60))

    first = ev.apply([event("x", 0), event("x", 1)])
    [successor] = buckets(ev)
    redundant = ev.apply([event("x", 2), event("x", 30), event("x", 59)])
    second = ev.apply([event("x", 61), event("x", 62)])

    assert [f.event_id for f in first] == [event("x", 1).id]
    assert (successor.start, successor.end, successor.count) == (at(60), at(120), 0)
    assert redundant == []
    assert [f.event_id for f in second] == [event("x", 62).id]


def test_reactive_event_past_window_counts_in_next_window() -> None:
    ev = evaluator(_reactive(expect=["x"], threshold=2, within=10))
    closing = event("x", 20)

    assert ev.apply([event("x", 0), event("x", 15)]) == []
    [bucket] = buckets(ev)
    assert (bucket.start, bucket.end, bucket.count) == (at(15), at(25), 1)
    assert bucket.last_event_id == event("x", 15).id

    [firing] = ev.apply([closing])

    assert firing.event_id == closing.id


def test_after_event_opens_bucket_at_its_time() -> None:
    ev = evaluator(_reactive(after=["start"], expect=["done"], threshold=1, within=30))
    done = event("done", 20)

    assert ev.apply([event("done", 0)]) == []
    assert buckets(ev) == []
    assert ev.apply([event("start", 10)]) == []
    [bucket] = buckets(ev)
    assert (bucket.start, bucket.end, bucket.count) == (at(10), at(40), 0)

    [firing] = ev.apply([done])

    assert firing.event_id == done.id
    assert buckets(ev) == []
    assert ev.apply([event("done", 25)]) == []


def test_bucket_of_trigger_with_after_is_deleted_when_window_ends() -> None:
    ev = evaluator(_reactive(after=["start"], expect=["done"], threshold=1, within=30))

    ev.apply([event("start", 100)])
    assert ev.apply([event("done", 140)]) == []
    assert buckets(ev) == []
    assert ev.apply([event("done", 141)]) == []


def test_after_and_expect_same_event_starts_count_at_minus_one() -> None:
    ev = evaluator(_reactive(after=["a"], expect=["a"], threshold=1, within=60))
    second = event("a", 10)

    assert ev.apply([event("a", 0)]) == []
    [bucket] = buckets(ev)
    assert (bucket.start, bucket.count) == (at(0), 0)

    [firing] = ev.apply([second])

    assert firing.event_id == second.id


def test_existing_bucket_is_not_modified_by_ensure() -> None:
    # The reference engine's output shows an existing bucket is kept exactly,
    # last event included (see the brief; SEMANTICS §3.1 words it otherwise).
    ev = evaluator(
        _proactive(after=["a"], expect=["b"], for_each=FOR_EACH_RESOURCE, threshold=1, within=30)
    )
    first = event("a", 0)

    ev.apply([first, event("a", 10)])
    [bucket] = buckets(ev)
    assert (bucket.start, bucket.end, bucket.count) == (at(0), at(30), 0)
    assert bucket.last_event_id == first.id

    [firing] = ev.advance(at(30), at(30))

    assert firing.event_id == first.id
    assert dict(firing.labels) == {"prefect.resource.id": "r"}


def test_second_after_event_does_not_restart_reactive_window() -> None:
    ev = evaluator(_reactive(after=["a"], expect=["b"], threshold=1, within=30))

    ev.apply([event("a", 0), event("a", 20)])
    assert (buckets(ev)[0].start, buckets(ev)[0].end) == (at(0), at(30))
    assert ev.apply([event("b", 35)]) == []


def test_for_each_keeps_one_bucket_per_key() -> None:
    ev = evaluator(_reactive(expect=["x"], for_each=FOR_EACH_RESOURCE, threshold=2, within=60))
    closing = event("x", 2, "r1")

    [firing] = ev.apply([event("x", 0, "r1"), event("x", 1, "r2"), closing])

    assert dict(firing.labels) == {"prefect.resource.id": "r1"}
    assert firing.event_id == closing.id
    by_key = {b.labels["prefect.resource.id"]: b for b in buckets(ev)}
    assert sorted(by_key) == ["r1", "r2"]
    assert (by_key["r1"].start, by_key["r1"].count) == (at(60), 0)
    assert by_key["r2"].count == 1


# -- §3.2 / §3.3: proactive -----------------------------------------------------------------


def test_proactive_without_for_each_opens_bucket_on_first_advance() -> None:
    ev = evaluator(_proactive(expect=["x"]))

    assert buckets(ev) == []
    assert ev.next_deadline() == DUE_NOW
    assert ev.advance(at(0), at(0)) == []

    [bucket] = buckets(ev)
    assert (bucket.start, bucket.end, bucket.count) == (at(0), at(10), 0)
    assert bucket.last_event_id is None
    assert ev.next_deadline() == at(10)


def test_proactive_with_for_each_opens_buckets_only_from_events() -> None:
    ev = evaluator(_proactive(expect=["x"], for_each=FOR_EACH_RESOURCE, within=30))

    assert ev.advance(at(0), at(0)) == []
    assert buckets(ev) == []
    assert ev.next_deadline() is None


def test_proactive_fires_when_window_ends_under_threshold() -> None:
    ev = evaluator(_proactive(expect=["x"], threshold=2, within=30))
    only = event("x", 5)

    ev.advance(at(0), at(0))
    assert ev.apply([only]) == []
    assert ev.advance(at(29), at(29)) == []

    [firing] = ev.advance(at(30), at(31))

    assert firing.event_id == only.id
    assert dict(firing.labels) == {}
    assert firing.fired_at == at(31)
    assert firing.posture is Posture.Proactive
    [successor] = buckets(ev)
    assert (successor.start, successor.end, successor.count) == (at(30), at(60), 0)


def test_proactive_firing_carries_bucket_last_event_and_labels() -> None:
    ev = evaluator(
        _proactive(
            after=["start"], expect=["done"], for_each=FOR_EACH_RESOURCE, threshold=1, within=30
        )
    )
    silent_start = event("start", 0, "r2")

    ev.apply([event("start", 0, "r1"), silent_start, event("done", 10, "r1")])
    [firing] = ev.advance(at(30), at(30))

    assert dict(firing.labels) == {"prefect.resource.id": "r2"}
    assert firing.event_id == silent_start.id


def test_proactive_successor_window_starts_at_later_of_end_and_as_of() -> None:
    ev = evaluator(_proactive(expect=["x"], threshold=1, within=30))

    ev.advance(at(0), at(0))
    [firing] = ev.advance(at(45), at(45))

    assert firing.event_id is None
    [successor] = buckets(ev)
    assert (successor.start, successor.end, successor.count) == (at(45), at(75), 0)


def test_full_proactive_bucket_is_deleted_at_next_advance_and_successor_opens_after() -> None:
    ev = evaluator(_proactive(expect=["x"], threshold=1, within=30))

    ev.advance(at(0), at(0))
    ev.apply([event("x", 5)])
    assert buckets(ev)[0].count == 1
    assert ev.next_deadline() == DUE_NOW

    assert ev.advance(at(6), at(6)) == []
    assert buckets(ev) == []
    assert ev.next_deadline() == DUE_NOW

    assert ev.advance(at(7), at(7)) == []
    [successor] = buckets(ev)
    assert (successor.start, successor.end, successor.count) == (at(7), at(37), 0)
    assert len(ev.advance(at(37), at(37))) == 1


def test_expected_event_between_advances_opens_bucket_through_reactive_path() -> None:
    ev = evaluator(_proactive(expect=["x"], threshold=2, within=30))

    ev.advance(at(0), at(0))
    ev.apply([event("x", 1), event("x", 2)])
    ev.advance(at(3), at(3))
    assert buckets(ev) == []

    ev.apply([event("x", 4)])

    [bucket] = buckets(ev)
    assert (bucket.start, bucket.end, bucket.count) == (at(4 - 900), at(34), 1)
    assert ev.advance(at(5), at(5)) == []
    assert buckets(ev)[0].start == at(4 - 900)


def test_proactive_restarts_window_on_after_and_expected_event() -> None:
    ev = evaluator(
        _proactive(after=["a"], expect=["a"], for_each=FOR_EACH_RESOURCE, threshold=1, within=30)
    )
    restart = event("a", 10)

    ev.apply([event("a", 0)])
    assert buckets(ev)[0].count == 0
    ev.apply([restart])
    [bucket] = buckets(ev)
    assert (bucket.start, bucket.end, bucket.count) == (at(10), at(40), 0)
    assert bucket.last_event_id == restart.id

    assert ev.advance(at(30), at(30)) == []
    [firing] = ev.advance(at(40), at(40))

    assert firing.event_id == restart.id


def test_proactive_expected_event_past_window_end_fires_on_it_and_counts_in_next_window() -> None:
    ev = evaluator(_proactive(expect=["x"], threshold=1, within=10))
    late = event("x", 12)

    ev.advance(at(0), at(0))
    [firing] = ev.apply([late])

    assert firing.event_id == late.id
    assert firing.fired_at == at(12)
    [successor] = buckets(ev)
    assert (successor.start, successor.end, successor.count) == (at(12), at(22), 1)


def test_proactive_buckets_are_evaluated_oldest_start_first() -> None:
    ev = evaluator(
        _proactive(
            after=["start"], expect=["done"], for_each=FOR_EACH_RESOURCE, threshold=1, within=30
        )
    )

    ev.apply([event("start", 5, "late"), event("start", 0, "early")])
    firings = ev.advance(at(40), at(40))

    assert [f.labels["prefect.resource.id"] for f in firings] == ["early", "late"]


def test_buckets_ended_sixty_seconds_ago_are_swept() -> None:
    ev = evaluator(_reactive(expect=["x"], threshold=5, within=10))

    ev.apply([event("x", 0)])
    assert ev.advance(at(69.9), at(69.9)) == []
    assert ev.explain().open_buckets == 1

    # SEMANTICS §3.3: inclusive, end <= as_of - 60 s.
    assert ev.advance(at(70), at(70)) == []
    assert ev.explain().open_buckets == 0


def test_a_proactive_firing_records_when_it_was_evaluated_against_its_deadline() -> None:
    on_time = evaluator(_proactive(expect=["x"], within=10))
    on_time.advance(at(0), at(0))
    [firing] = on_time.advance(at(10), at(10))
    assert firing.deadline_us == firing.evaluated_us  # not late

    late = evaluator(_proactive(expect=["x"], within=10))
    late.advance(at(0), at(0))
    [firing] = late.advance(at(95), at(95))  # the timer was down for 85 s
    assert firing.evaluated_us is not None and firing.deadline_us is not None
    assert firing.evaluated_us - firing.deadline_us == 85_000_000


def test_a_bucket_cap_evicts_the_key_opened_earliest_and_counts_it() -> None:
    trigger = _reactive(expect=["x"], threshold=5, within=60, for_each=FOR_EACH_RESOURCE)
    ev = evaluator(trigger)
    capped = Evaluator(ev.automation, max_keys=3)
    stream = [event("x", t, f"r{t}") for t in range(5)]
    capped.apply(stream)
    ev.apply(stream)

    assert [b.labels["prefect.resource.id"] for b in buckets(capped)] == ["r2", "r3", "r4"]
    [view] = capped.explain().triggers
    assert (view.buckets_total, view.evicted_buckets) == (3, 2)
    assert len(buckets(ev)) == 5  # no cap: as Prefect


def test_explain_pages_the_buckets() -> None:
    ev = evaluator(_reactive(expect=["x"], threshold=5, within=60, for_each=FOR_EACH_RESOURCE))
    ev.apply([event("x", t, f"r{t}") for t in range(10)])
    [view] = ev.explain(limit=3, offset=4).triggers
    assert [b.labels["prefect.resource.id"] for b in view.buckets] == ["r4", "r5", "r6"]
    assert view.buckets_total == 10
