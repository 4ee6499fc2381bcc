"""Counting buckets of one event trigger: reactive and proactive evaluation (SEMANTICS §3).

``BucketTrigger`` holds at most one bucket per bucketing key and follows
Prefect's algorithm rule by rule. Times are integer microseconds (see
``timestamps``). A heap of bucket ends gives the next deadline and the due
buckets without scanning them all.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from marmot.engine.matching import TriggerMatcher
from marmot.engine.models.events import Event, dump_event, load_event
from marmot.engine.models.triggers import EventTrigger, Posture
from marmot.engine.timestamps import US_PER_S, span_us
from marmot.engine.triggers.held import HeldEvents
from marmot.engine.triggers.resolution import Resolutions

Key = tuple[str, ...]
# SEMANTICS §3.1: a bucket opened by an expected event reaches 15 min back,
# to catch events of the same moment that arrive out of order.
LOOKBACK_US = 15 * 60 * US_PER_S
# SEMANTICS §3.3: buckets whose end is at or before as_of - 60 s are swept.
SWEEP_AFTER_US = 60 * US_PER_S


class Bucket:
    """One counting window: ``[start, end)``, its count and its last event.

    Reactive triggers never fire on ``last_event`` (only Proactive ones do),
    so they keep just its id: a bucket stays small with 100k keys open.
    """

    __slots__ = ("count", "end", "last", "start")

    def __init__(self, start: int, end: int, count: int, last: Event | UUID | None) -> None:
        self.start = start
        self.end = end
        self.count = count
        self.last = last

    @property
    def last_event(self) -> Event | None:
        """The last event counted, when the trigger keeps whole events."""
        return self.last if isinstance(self.last, Event) else None

    @property
    def last_event_id(self) -> UUID | None:
        """The id of the last event counted or that touched the bucket."""
        if isinstance(self.last, Event):
            return self.last.id
        return self.last


@dataclass(frozen=True, slots=True)
class LeafFiring:
    """An event trigger fired: the raw facts, before the automation wraps them."""

    key: Key
    start: int
    end: int
    event: Event | None
    fired_us: int


FireSink = Callable[[LeafFiring], None]


class BucketTrigger:
    """The state and evaluation of one ``event`` trigger."""

    def __init__(
        self, trigger: EventTrigger, sink: FireSink, *, max_keys: int | None = None
    ) -> None:
        """``max_keys`` caps the open buckets (one per ``for_each`` key): a new key
        past it evicts the key opened earliest (counted in ``evicted``)."""
        self.trigger = trigger
        self.matcher = TriggerMatcher(trigger)
        self.is_proactive = trigger.posture is Posture.Proactive
        self.is_immediate = trigger.immediate
        self.threshold = trigger.threshold
        self.within = span_us(trigger.within)
        self.has_after = bool(trigger.after)
        self.has_for_each = bool(trigger.for_each)
        self.buckets: dict[Key, Bucket] = {}
        # (end, tiebreak, key, bucket): stale entries (bucket replaced or gone)
        # are skipped when they reach the top.
        self._heap: list[tuple[int, int, Key, Bucket]] = []
        self._pushes = 0
        # Proactive buckets at or over threshold, deleted at the next advance.
        self._full: set[Key] = set()
        # Set by a proactive evaluation that left no key-() bucket (the one it
        # opened held enough events to be deleted at once, §3.3 step 2 with
        # §3.4): the next one that can open it is a microsecond later, not now.
        self._reopen_at: int | None = None
        self._sink = sink
        self.max_keys = max_keys
        self.evicted = 0
        # The states it fired into, until they resolve (opt-in, SEMANTICS §5).
        self.resolutions: Resolutions | None = None
        # SEMANTICS §3.4: a Proactive trigger with `after` holds its expect-only
        # events per key, for the buckets it creates later.
        self.held: HeldEvents | None = (
            HeldEvents(self.threshold, self.within)
            if self.is_proactive and self.has_after
            else None
        )

    # -- bucket bookkeeping -------------------------------------------------

    def _keep(self, event: Event) -> Event | UUID:
        return event if self.is_proactive else event.id

    def _put(self, key: Key, bucket: Bucket) -> Bucket:
        self.buckets[key] = bucket
        self._pushes += 1
        heapq.heappush(self._heap, (bucket.end, self._pushes, key, bucket))
        if self.is_proactive and bucket.count >= self.threshold:
            self._full.add(key)
        else:
            self._full.discard(key)
        return bucket

    def _drop(self, key: Key) -> None:
        self.buckets.pop(key, None)
        self._full.discard(key)

    def _ensure(self, key: Key, start: int, end: int, count: int, event: Event | None) -> Bucket:
        # SEMANTICS §3.1: create only if missing. An existing bucket is left
        # exactly as it is, last event included (SEMANTICS §3.4's last note).
        bucket = self.buckets.get(key)
        if bucket is not None:
            return bucket
        if self.held is not None:
            count += self.held.count(key, start, end)
        if self.max_keys is not None and len(self.buckets) >= self.max_keys:
            # Marmot's bound on memory (limits.max_buckets_per_trigger): the key
            # opened earliest goes, as if its window had been swept.
            self._drop(next(iter(self.buckets)))
            self.evicted += 1
        return self._put(key, Bucket(start, end, count, self._keep(event) if event else None))

    def _meets_threshold(self, count: int) -> bool:
        if self.is_proactive:
            return count < self.threshold
        return count >= self.threshold

    # -- SEMANTICS §3.1: one event --------------------------------------------

    def on_event(self, event: Event, occurred: int, fired_us: int) -> None:
        """Reactive evaluation of one event the trigger is interested in."""
        self._reopen_at = None
        name = event.event
        matcher = self.matcher
        key = matcher.bucketing_key(event)
        is_expected = matcher.expects(name)
        bucket: Bucket | None = None
        if self.has_after and matcher.starts_after(name):
            # The same event may open a bucket and count in it: start at -1 so
            # the opening event is not counted twice.
            initial = -1 if is_expected else 0
            bucket = self._ensure(key, occurred, occurred + self.within, initial, event)
        if bucket is None and not self.has_after and is_expected:
            bucket = self._ensure(key, occurred - LOOKBACK_US, occurred + self.within, 0, event)
        if not is_expected:
            return
        if bucket is None:
            held = self.held
            if held is not None:
                # SEMANTICS §3.4: an expect-only event is held once; a second
                # delivery of it is not evaluated again.
                if held.is_held(key, event.id, occurred):
                    return
                held.hold(key, event.id, occurred, fired_us)
            bucket = self.buckets.get(key)
        if bucket is not None:
            self._evaluate(key, bucket, occurred, event, fired_us)
        if self.resolutions is not None:
            self.resolutions.expected(key, event, occurred, fired_us)

    # -- SEMANTICS §3.2 ---------------------------------------------------------

    def _evaluate(
        self, key: Key, bucket: Bucket, now: int, event: Event | None, fired_us: int
    ) -> None:
        count = 1 if event is not None else 0
        if now < bucket.start:
            return  # a late event, or one for a window that already fired
        previous = bucket.last
        if count and (self.is_immediate or bucket.start <= now < bucket.end):
            bucket.count += count
            bucket.last = self._keep(event)  # type: ignore[arg-type]
            count = 0
            if self.is_proactive and bucket.count >= self.threshold:
                self._full.add(key)
        ready = not self.is_proactive or bucket.end <= now
        if ready and self._meets_threshold(bucket.count):
            fired_on = event if event is not None else bucket.last_event
            self._drop(key)
            resolutions = self.resolutions
            if resolutions is not None:
                resolutions.supersede(key, fired_us)
            self._sink(LeafFiring(key, bucket.start, bucket.end, fired_on, fired_us))
            if resolutions is not None:
                resolutions.fired(key, bucket.start, bucket.end, bucket.count, fired_on, fired_us)
        elif now < bucket.end:
            if (
                event is not None
                and self.is_proactive
                and not self._meets_threshold(bucket.count)
                and self.matcher.starts_after(event.event)
                and self.matcher.expects(event.event)
            ):
                self._reset(key, now, event, previous)
            return
        # The window is over, or it just fired.
        if self.has_after:
            self._drop(key)
            return
        if self.within == 0:
            return
        start = max(bucket.end, now)
        end = start + self.within
        if not self.is_proactive and count > 0:
            # The event belongs to the next window: open it and count it there.
            fresh = self._put(key, Bucket(start, end, 0, None))
            self._evaluate(key, fresh, now, event, fired_us)
            return
        self._put(key, Bucket(start, end, count, None))

    def _reset(self, key: Key, now: int, event: Event, previous: Event | UUID | None) -> None:
        # SEMANTICS §3.2/§3.4: the same event is `after` and `expect`: a fresh
        # window from it, counting the held events inside it. Its firing
        # context stays the replaced bucket's last event when that one is
        # expect-only and occurred at or after this event (a terminal state
        # racing the last heartbeat).
        last: Event = event
        if (
            isinstance(previous, Event)
            and self.matcher.expects(previous.event)
            and not self.matcher.starts_after(previous.event)
            and previous.occurred >= event.occurred
        ):
            last = previous
        end = now + self.within
        count = self.held.count(key, now, end) if self.held is not None else 0
        self._put(key, Bucket(now, end, count, last))

    # -- SEMANTICS §3.3: proactive evaluation -------------------------------------

    def advance(self, as_of: int, fired_us: int) -> None:
        """Proactive evaluation at ``as_of`` on the events clock (the sweep is ``sweep``)."""
        opened: Bucket | None = None
        if self.is_proactive:
            if not self.has_for_each and () not in self.buckets:
                opened = self._ensure((), as_of, as_of + self.within, 0, None)
            for key in list(self._full):
                full = self.buckets.get(key)
                if full is not None and full.count >= self.threshold:
                    self._drop(key)
                self._full.discard(key)
            due = self._pop_due(as_of)
            # Oldest start first (SEMANTICS §3.3); equal starts by key, so the
            # order depends on the state alone (a restored engine agrees).
            due.sort(key=lambda entry: (entry[0], entry[2]))
            for _, _, key, bucket in due:
                if self.buckets.get(key) is bucket:
                    self._evaluate(key, bucket, as_of, None, fired_us)
        # The ()-bucket opened here was deleted as full at once: evaluating again at
        # this as_of would open and delete the same bucket.
        deleted = opened is not None and () not in self.buckets
        self._reopen_at = as_of + 1 if deleted else None
        if self.resolutions is not None:
            self.resolutions.advance(as_of, fired_us)

    def sweep(self, as_of: int, now: int) -> None:
        """SEMANTICS §3.3's periodic sweep at ``as_of``: buckets that ended 60 s ago or
        more go, and held events past their retention (on the processing clock)."""
        self._sweep(as_of - SWEEP_AFTER_US)
        if self.held is not None:
            self.held.sweep(now, self._open_until)

    def _pop_due(self, as_of: int) -> list[tuple[int, int, Key, Bucket]]:
        # Only buckets whose window has ended can change on a proactive pass;
        # they are evaluated oldest start first, as Prefect orders them.
        heap = self._heap
        due: list[tuple[int, int, Key, Bucket]] = []
        while heap and heap[0][0] <= as_of:
            _, tiebreak, key, bucket = heapq.heappop(heap)
            if self.buckets.get(key) is bucket:
                due.append((bucket.start, tiebreak, key, bucket))
        return due

    def _open_until(self, key: Key) -> int | None:
        bucket = self.buckets.get(key)
        return bucket.end if bucket is not None else None

    def _sweep(self, cutoff: int) -> None:
        # SEMANTICS §3.3: inclusive, `end <= as_of - 60 s`.
        heap = self._heap
        while heap and heap[0][0] <= cutoff:
            _, _, key, bucket = heapq.heappop(heap)
            if self.buckets.get(key) is bucket:
                self._drop(key)

    def _clean_top(self) -> None:
        heap = self._heap
        while heap and self.buckets.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)

    def next_deadline(self) -> int | None:
        """The earliest events-clock time at which ``advance`` would change anything.

        ``-1`` means "as soon as possible" (a Proactive bucket to delete or
        open); ``None`` means never, until another event arrives.
        """
        if self.is_proactive and self._full:
            return -1
        if self.is_proactive and not self.has_for_each and () not in self.buckets:
            return -1 if self._reopen_at is None else self._reopen_at
        self._clean_top()
        deadline: int | None = None
        if self._heap:
            end = self._heap[0][0]
            # A Reactive bucket only changes when it is swept, exactly at the boundary.
            deadline = end if self.is_proactive else end + SWEEP_AFTER_US
        if self.held is not None:
            sweep = self.held.next_deadline()
            if sweep is not None and (deadline is None or sweep < deadline):
                deadline = sweep
        if self.resolutions is not None:
            resolves = self.resolutions.next_deadline()
            if resolves is not None and (deadline is None or resolves < deadline):
                deadline = resolves
        return deadline

    # -- state ------------------------------------------------------------------

    def items(self) -> Iterator[tuple[Key, Bucket]]:
        """The open buckets, oldest first."""
        return iter(sorted(self.buckets.items(), key=_by_start))

    def page(self, limit: int | None, offset: int = 0) -> list[tuple[Key, Bucket]]:
        """``limit`` open buckets from ``offset``, oldest first (all with no limit)."""
        if limit is None:
            return list(self.items())[offset:]
        first = heapq.nsmallest(offset + limit, self.buckets.items(), key=_by_start)
        return first[offset:]

    def snapshot(self) -> dict[str, Any]:
        """The buckets (``[key, start, end, count, last]`` rows, oldest first), the
        unresolved states and the held events, as plain values."""
        return {
            "buckets": [
                [list(key), b.start, b.end, b.count, _dump_last(b.last)] for key, b in self.items()
            ],
            "unresolved": self.resolutions.snapshot() if self.resolutions is not None else [],
            "held": self.held.snapshot() if self.held is not None else [],
            "reopen_at": self._reopen_at,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the state with one ``snapshot`` took of the same trigger.

        Unresolved states are kept only while Resolved states are on.
        """
        self.clear()
        for key, start, end, count, last in data["buckets"]:
            self._put(tuple(key), Bucket(start, end, count, _load_last(last)))
        if self.resolutions is not None:
            self.resolutions.restore(data["unresolved"])
        if self.held is not None:
            self.held.restore(data["held"])
        self._reopen_at = data.get("reopen_at")

    def clear(self) -> None:
        """Forget every bucket."""
        self.buckets.clear()
        self._heap.clear()
        self._full.clear()
        self._reopen_at = None
        if self.held is not None:
            self.held.clear()
        if self.resolutions is not None:
            self.resolutions.clear()


def _dump_last(last: Event | UUID | None) -> Any:
    if isinstance(last, Event):
        return dump_event(last)
    return str(last) if last is not None else None


def _load_last(data: Any) -> Event | UUID | None:
    if isinstance(data, dict):
        return load_event(data)
    return UUID(data) if data is not None else None


def _by_start(item: tuple[Key, Bucket]) -> tuple[int, Key]:
    return item[1].start, item[0]
