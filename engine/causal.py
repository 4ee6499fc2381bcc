"""Causal ordering on ``follows`` (SEMANTICS §6), and at-most-once evaluation per event id.

An event that follows another waits until its leader has been processed,
then both are evaluated in order; a follower whose leader has not come
within the lookback is evaluated on its own. Released followers are stamped
``received`` = the time they are released, which is when they are processed.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from datetime import datetime
from uuid import UUID

from marmot.engine.models.events import Event
from marmot.engine.timestamps import US_PER_S, from_us, to_us

LOOKBACK_US = 15 * 60 * US_PER_S


class CausalOrdering:
    """Holds followers until their leaders are processed."""

    def __init__(self, lookback_us: int = LOOKBACK_US) -> None:
        self.lookback = lookback_us
        self._seen: OrderedDict[UUID, int] = OrderedDict()
        self._waiting: dict[UUID, list[Event]] = {}
        self._lost_heap: list[tuple[int, int, Event]] = []
        self._pushes = 0
        self._next_expiry = 4096
        self.duplicates = 0

    @property
    def waiting(self) -> int:
        """How many followers are waiting for their leader."""
        return sum(len(v) for v in self._waiting.values())

    def admit(self, event: Event, now: datetime) -> list[Event]:
        """Offer an arriving event; return the events to evaluate now, in order:
        none if it must wait, else it and the followers it releases."""
        return self.admit_us(event, to_us(now))

    def admit_us(self, event: Event, now_us: int) -> list[Event]:
        """``admit`` with the time in microseconds."""
        if self._was_seen(event.id, now_us):
            # Delivered twice: Prefect evaluates an event id once (within the lookback).
            self.duplicates += 1
            return []
        leader = event.follows
        if leader is None and not self._waiting:
            self._remember(event.id, now_us)
            return [event]
        if leader is not None and not self._was_seen(leader, now_us):
            received = to_us(event.received) if event.received else now_us
            if received > now_us - self.lookback:
                self._waiting.setdefault(leader, []).append(event)
                self._pushes += 1
                heapq.heappush(self._lost_heap, (received, self._pushes, event))
                return []
        return self._process(event, from_us(now_us), now_us)

    def _process(self, event: Event, now: datetime, now_us: int) -> list[Event]:
        ready: list[Event] = []
        stack = [event]
        while stack:
            current = stack.pop()
            ready.append(current)
            self._remember(current.id, now_us)
            followers = self._waiting.pop(current.id, None) if self._waiting else None
            if followers:
                # Depth first, earliest occurred first: a follower's own
                # followers come right after it.
                followers.sort(key=lambda e: e.occurred)
                stack.extend(f.model_copy(update={"received": now}) for f in reversed(followers))
        return ready

    def release_lost(self, now: datetime) -> list[Event]:
        """Followers that waited the whole lookback: evaluate them now, by ``occurred``."""
        now_us = to_us(now)
        self._expire(now_us)
        lost: list[Event] = []
        heap = self._lost_heap
        while heap and heap[0][0] <= now_us - self.lookback:
            _, _, event = heapq.heappop(heap)
            followers = self._waiting.get(event.follows) if event.follows else None
            if followers and event in followers:
                followers.remove(event)
                if not followers:
                    del self._waiting[event.follows]  # type: ignore[arg-type]
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
            event = heap[0][2]
            followers = self._waiting.get(event.follows) if event.follows else None
            if followers and event in followers:
                return from_us(heap[0][0] + self.lookback)
            heapq.heappop(heap)
        return None

    def _was_seen(self, event_id: UUID, now_us: int) -> bool:
        at = self._seen.get(event_id)
        return at is not None and at >= now_us - self.lookback

    def _remember(self, event_id: UUID, now_us: int) -> None:
        seen = self._seen
        seen[event_id] = now_us
        seen.move_to_end(event_id)
        # Expire in bulk, not per event: the lookup above checks the age anyway.
        if len(seen) > self._next_expiry:
            self._expire(now_us)
            self._next_expiry = len(seen) + 4096

    def _expire(self, now_us: int) -> None:
        horizon = now_us - self.lookback
        seen = self._seen
        while seen:
            _, at = next(iter(seen.items()))
            if at >= horizon:
                break
            seen.popitem(last=False)
