"""Causal ordering on ``follows`` (SEMANTICS §6), and at-most-once evaluation per event id.

Prefect's rules, reproduced:

* An event id already processed within the last 30 minutes is a duplicate:
  it is dropped before anything else sees it (``is_duplicate``), the events
  clock included.
* An event whose ``follows`` names an event not processed within those 30
  minutes waits for it (unless it follows itself, or was received 15
  minutes ago or more). A follower delivered again while it waits is still
  one follower; its wait counts from its latest delivery.
* When an event is processed, the followers waiting for it are processed
  right after it, earliest ``occurred`` first, each followed by its own
  followers, at most 20 levels deep (deeper ones wait on).
* A follower still waiting 15 minutes after its (latest) delivery is lost:
  ``release_lost`` processes it on its own.

Released followers are stamped ``received`` = the time they are released,
which is when they are processed. Times are microseconds (or datetimes).

Two of Marmot's own, off by default (replay keeps Prefect's rules exactly;
the daemon turns them on): ``release_cycles`` processes at once an event
whose leader waits, directly or not, for that event (Prefect lets such a
cycle wait out the 15 minutes), and ``max_waiting`` bounds the followers
held: past it, the ones delivered longest ago are released as lost.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from datetime import datetime
from uuid import UUID

from marmot.engine.models.events import Event
from marmot.engine.timestamps import US_PER_S, from_us, to_us

# A follower waits this long for its leader (Prefect's PRECEDING_EVENT_LOOKBACK).
LOOKBACK_US = 15 * 60 * US_PER_S
# Processed event ids are remembered this long (Prefect's SEEN_EXPIRATION).
SEEN_US = 30 * 60 * US_PER_S
# Followers processed in one chain below an event (MAX_DEPTH_OF_PRECEDING_EVENT).
MAX_DEPTH = 20


class CausalOrdering:
    """Holds followers until their leaders are processed; drops duplicates."""

    def __init__(
        self,
        lookback_us: int = LOOKBACK_US,
        seen_us: int = SEEN_US,
        *,
        release_cycles: bool = False,
        max_waiting: int | None = None,
    ) -> None:
        self.lookback = lookback_us
        self.seen_for = seen_us
        self.release_cycles = release_cycles
        self.max_waiting = max_waiting
        self.cycles = 0  # followers processed at once because they closed a cycle
        self.evicted = 0  # followers released early by max_waiting
        # Keyed by the id's integer: hashing an int is a C call, hashing a UUID a
        # Python one, and this is looked up for every event.
        self._seen: OrderedDict[int, int] = OrderedDict()
        # leader id -> follower id -> follower; follower id -> (its latest delivery in
        # µs, its leader's id).
        self._followers: dict[UUID, dict[UUID, Event]] = {}
        self._waitlist: dict[UUID, tuple[int, UUID]] = {}
        # (latest delivery, tiebreak, follower id): stale entries are skipped.
        self._lost_heap: list[tuple[int, int, UUID]] = []
        self._pushes = 0
        self._next_expiry = 4096
        self.duplicates = 0

    @property
    def waiting(self) -> int:
        """How many followers are waiting for their leader."""
        return len(self._waitlist)

    def is_duplicate(self, event_id: UUID, now_us: int) -> bool:
        """Whether ``event_id`` was processed within the last 30 minutes (then the
        delivery is dropped before anything else sees it, and counted)."""
        if self._was_seen(event_id, now_us):
            self.duplicates += 1
            return True
        return False

    def offer_us(self, event: Event, now_us: int) -> list[Event] | None:
        """``is_duplicate`` then ``admit_us`` in one call: None for a duplicate, else
        the events to evaluate now (none if it must wait).

        The common case, an event that follows nothing while no follower waits,
        only records the id: nothing can wait for it, so it is all that is ready."""
        key = event.id.int
        at = self._seen.get(key)
        if at is not None and at > now_us - self.seen_for:
            self.duplicates += 1
            return None
        if event.follows is None and not self._waitlist:
            seen = self._seen
            seen[key] = now_us
            if at is not None:
                seen.move_to_end(key)  # seen long ago: now the newest
            elif len(seen) > self._next_expiry:
                self._expire_in_bulk(now_us)
            return [event]
        return self.admit_us(event, now_us)

    def admit(self, event: Event, now: datetime) -> list[Event]:
        """Offer an arriving event (not a duplicate); return the events to evaluate now,
        in order: none if it must wait, else it and the followers it releases."""
        return self.admit_us(event, to_us(now))

    def admit_us(self, event: Event, now_us: int) -> list[Event]:
        """``admit`` with the time in microseconds."""
        leader = event.follows
        if leader is not None and leader != event.id and not self._was_seen(leader, now_us):
            received = to_us(event.received) if event.received else now_us
            if now_us - received < self.lookback:
                if self.release_cycles and self._waits_for(leader, event.id):
                    self.cycles += 1  # its leader waits for it: nothing would ever come
                else:
                    self._wait(leader, event, received)
                    return []
        if self._waitlist and event.id in self._waitlist:
            self._forget(event.id)  # it waited, and now goes anyway
        return self._process(event, from_us(now_us), now_us)

    def _waits_for(self, waiter: UUID, target: UUID) -> bool:
        """Whether ``waiter`` waits, directly or through other followers, for ``target``."""
        seen: set[UUID] = set()
        current: UUID | None = waiter
        while current is not None and current not in seen:
            seen.add(current)
            entry = self._waitlist.get(current)
            if entry is None:
                return False
            current = entry[1]
            if current == target:
                return True
        return False

    def hold(self, event: Event, received_us: int) -> None:
        """Put back a follower that waited when the daemon stopped (its leader unseen),
        delivered at ``received_us``."""
        if event.follows is not None:
            self._wait(event.follows, event, received_us)

    def over_bound(self, now: datetime) -> list[Event]:
        """Past ``max_waiting``, the followers delivered longest ago, released as lost
        (evaluate them now, in order, each with what it releases)."""
        if self.max_waiting is None or len(self._waitlist) <= self.max_waiting:
            return []
        now_us = to_us(now)
        excess = len(self._waitlist) - self.max_waiting
        oldest = sorted(self._waitlist.items(), key=lambda item: item[1][0])[:excess]
        released = [e for e in (self._forget(follower_id) for follower_id, _ in oldest) if e]
        self.evicted += len(released)
        released.sort(key=lambda e: e.occurred)
        ready: list[Event] = []
        for event in released:
            ready.extend(self._process(event.model_copy(update={"received": now}), now, now_us))
        return ready

    def _wait(self, leader: UUID, event: Event, received: int) -> None:
        self._forget(event.id)  # delivered again: the latest delivery counts
        self._followers.setdefault(leader, {})[event.id] = event
        self._waitlist[event.id] = (received, leader)
        self._pushes += 1
        heapq.heappush(self._lost_heap, (received, self._pushes, event.id))

    def _forget(self, follower_id: UUID) -> Event | None:
        entry = self._waitlist.pop(follower_id, None)
        if entry is None:
            return None
        leader = entry[1]
        followers = self._followers[leader]
        event = followers.pop(follower_id)
        if not followers:
            del self._followers[leader]
        return event

    def _process(self, event: Event, now: datetime, now_us: int) -> list[Event]:
        ready: list[Event] = []
        self._chain(event, now, now_us, 0, ready)
        return ready

    def _chain(
        self, event: Event, now: datetime, now_us: int, depth: int, ready: list[Event]
    ) -> bool:
        """Process ``event`` and, after it, the followers waiting for it; False when
        the depth limit stopped the chain."""
        if depth > MAX_DEPTH:
            return False
        ready.append(event)
        self._remember_key(event.id.int, now_us)
        waiting = self._followers.get(event.id) if self._followers else None
        if not waiting:
            return True
        for follower in sorted(waiting.values(), key=lambda e: e.occurred):
            released = follower.model_copy(update={"received": now})
            if depth + 1 > MAX_DEPTH:
                return True  # Prefect stops this leader's followers here; they wait on
            self._forget(follower.id)
            if not self._chain(released, now, now_us, depth + 1, ready):
                return True
        return True

    def release_lost(self, now: datetime) -> list[Event]:
        """Followers whose latest delivery was 15 minutes ago or more: evaluate them now,
        earliest ``occurred`` first, each with the followers it releases."""
        now_us = to_us(now)
        self._expire(now_us)
        lost: list[Event] = []
        heap = self._lost_heap
        while heap and heap[0][0] <= now_us - self.lookback:
            received, _, follower_id = heapq.heappop(heap)
            entry = self._waitlist.get(follower_id)
            if entry is None or entry[0] != received:
                continue  # delivered again since, or released
            event = self._forget(follower_id)
            if event is not None:
                lost.append(event)
        lost.sort(key=lambda e: e.occurred)
        ready: list[Event] = []
        for event in lost:
            ready.extend(self._process(event.model_copy(update={"received": now}), now, now_us))
        return ready

    def next_deadline(self) -> datetime | None:
        """The wall time at which the oldest waiting follower is given up on."""
        heap = self._lost_heap
        while heap:
            received, _, follower_id = heap[0]
            entry = self._waitlist.get(follower_id)
            if entry is not None and entry[0] == received:
                return from_us(received + self.lookback)
            heapq.heappop(heap)
        return None

    def _was_seen(self, event_id: UUID, now_us: int) -> bool:
        at = self._seen.get(event_id.int)
        return at is not None and at > now_us - self.seen_for

    def _remember_key(self, key: int, now_us: int) -> None:
        seen = self._seen
        seen[key] = now_us
        seen.move_to_end(key)
        if len(seen) > self._next_expiry:
            self._expire_in_bulk(now_us)

    def _expire_in_bulk(self, now_us: int) -> None:
        # Expire in bulk, not per event: the lookup checks the age anyway.
        self._expire(now_us)
        self._next_expiry = len(self._seen) + 4096

    def _expire(self, now_us: int) -> None:
        horizon = now_us - self.seen_for
        seen = self._seen
        while seen:
            _, at = next(iter(seen.items()))
            if at > horizon:
                break
            seen.popitem(last=False)
