"""Held expect events of a Proactive trigger with ``after`` (SEMANTICS §3.4).

Events of one bucketing key can be processed in any order, so an expected
event can arrive before the ``after`` event whose window it belongs to.
Prefect therefore holds every expect-only event per key, and each bucket
the trigger creates later starts at the number of held events inside its
window. ``HeldEvents`` keeps them in memory, bounded the way Prefect bounds
them, so that what it drops never changes an outcome:

* per key, only events within ``max(30 min, within)`` of the newest held
  one are kept (a window reaches at most ``within`` back);
* time is cut into epoch-aligned slots ``within`` wide, and each slot keeps
  its first and last ``threshold`` events: a window spans the end of one
  slot and the start of the next, so it still counts at least
  ``min(threshold, events in it)``, and a count at the threshold already
  keeps a Proactive trigger from firing;
* the sweep drops events held more than 30 min ago (processing clock)
  unless the key has a bucket that has not ended yet.

Times are integer microseconds.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from marmot.engine.timestamps import US_PER_S

Key = tuple[str, ...]

# Twice the preceding-event lookback: a lost follower waits one lookback, and
# an `after` event among them reaches one lookback back.
RETENTION_US = 30 * 60 * US_PER_S


@dataclass(frozen=True, slots=True, order=True)
class HeldEvent:
    """One held event: ordered by ``(occurred, id)``, as Prefect trims them."""

    occurred: int
    id: UUID
    held_at: int


@dataclass(frozen=True, slots=True)
class HeldSummary:
    """What one key holds, for ``explain``."""

    key: Key
    count: int
    oldest: int
    newest: int


class HeldEvents:
    """The held expect-only events of one trigger, per bucketing key."""

    def __init__(self, threshold: int, within_us: int) -> None:
        self.threshold = threshold
        self.within = within_us
        self.horizon = max(RETENTION_US, within_us)
        # Sorted by (occurred, id); a key with no held event has no entry.
        self._by_key: dict[Key, list[HeldEvent]] = {}
        # (held_at, key, is_recheck): when each key next needs a look from the sweep
        # (a recheck: when the bucket that kept its events has ended). Entries go
        # stale when their events are trimmed or dropped; they are skipped.
        self._due: list[tuple[int, Key, bool]] = []

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_key.values())

    def is_held(self, key: Key, event_id: UUID, occurred: int) -> bool:
        """Whether the event ``event_id`` that occurred at ``occurred`` is held for ``key``."""
        held = self._by_key.get(key)
        if not held:
            return False
        # Events with the same `occurred` sit together: look only there.
        i = bisect_left(held, occurred, key=_occurred)
        while i < len(held) and held[i].occurred == occurred:
            if held[i].id == event_id:
                return True
            i += 1
        return False

    def hold(self, key: Key, event_id: UUID, occurred: int, held_at: int) -> None:
        """Hold an event for ``key`` (the caller checked ``is_held``), then trim the key."""
        held = self._by_key.get(key)
        if held is None:
            held = self._by_key[key] = []
        insort(held, HeldEvent(occurred, event_id, held_at))
        # The horizon runs back from the newest held event, not from this one,
        # so events held newest first (a backfill) are bounded too.
        cut = bisect_left(held, held[-1].occurred - self.horizon, key=_occurred)
        if cut:
            del held[:cut]
        if self.within > 0:
            self._trim_slot(held, occurred)
        if not held:  # a threshold of 0 keeps nothing
            del self._by_key[key]
            return
        heapq.heappush(self._due, (held_at, key, False))

    def _trim_slot(self, held: list[HeldEvent], occurred: int) -> None:
        # Only the new event's slot changed, so only it is trimmed.
        start = occurred // self.within * self.within
        lo = bisect_left(held, start, key=_occurred)
        hi = bisect_left(held, start + self.within, key=_occurred)
        keep = self.threshold
        if hi - lo > 2 * keep:
            del held[lo + keep : hi - keep]

    def count(self, key: Key, start: int, end: int) -> int:
        """How many events held for ``key`` occurred in ``[start, end)``."""
        held = self._by_key.get(key)
        if not held:
            return 0
        return bisect_left(held, end, key=_occurred) - bisect_left(held, start, key=_occurred)

    def sweep(self, now: int, open_until: Callable[[Key], int | None]) -> None:
        """Drop events held before ``now - 30 min`` for keys without a bucket still open.

        ``open_until(key)`` gives the end of the key's bucket, or None.
        """
        cutoff = now - RETENTION_US
        due = self._due
        looked: set[Key] = set()
        while due and due[0][0] < cutoff:
            _, key, _ = heapq.heappop(due)
            if key in looked or key not in self._by_key:
                continue
            looked.add(key)
            end = open_until(key)
            if end is not None and end > now:
                # Look again when that bucket has ended.
                heapq.heappush(due, (end - RETENTION_US - 1, key, True))
                continue
            self._drop_older(key, cutoff)

    def _drop_older(self, key: Key, cutoff: int) -> None:
        kept = [h for h in self._by_key[key] if h.held_at >= cutoff]
        if kept:
            self._by_key[key] = kept
        else:
            del self._by_key[key]

    def next_deadline(self) -> int | None:
        """The earliest ``now`` at which ``sweep`` would drop something, or None."""
        due = self._due
        while due and self._is_stale(*due[0]):
            heapq.heappop(due)
        return due[0][0] + RETENTION_US + 1 if due else None

    def _is_stale(self, held_at: int, key: Key, is_recheck: bool) -> bool:
        held = self._by_key.get(key)
        if held is None:
            return True
        return not is_recheck and all(h.held_at != held_at for h in held)

    def items(self) -> Iterator[tuple[Key, list[HeldEvent]]]:
        """Every key with its held events, keys in order."""
        for key in sorted(self._by_key):
            yield key, self._by_key[key]

    def summaries(self) -> list[HeldSummary]:
        """How many events each key holds, and the span they occurred in."""
        return [
            HeldSummary(key, len(held), held[0].occurred, held[-1].occurred)
            for key, held in self.items()
        ]

    def snapshot(self) -> list[list[Any]]:
        """Every key's held events as ``[key, [[occurred, id, held_at], ...]]`` rows."""
        return [
            [list(key), [[h.occurred, str(h.id), h.held_at] for h in held]]
            for key, held in self.items()
        ]

    def restore(self, rows: list[list[Any]]) -> None:
        """Replace the held events with ``snapshot`` rows."""
        self.clear()
        for key, events in rows:
            held = sorted(HeldEvent(occurred, UUID(id_), at) for occurred, id_, at in events)
            if not held:
                continue
            self._by_key[tuple(key)] = held
            for h in held:
                heapq.heappush(self._due, (h.held_at, tuple(key), False))

    def clear(self) -> None:
        """Forget every held event."""
        self._by_key.clear()
        self._due.clear()


def _occurred(held: HeldEvent) -> int:
    return held.occurred
