"""Resolved states: Marmot's opt-in extension of SEMANTICS §5.

Prefect's server never resolves an automation. With resolution on, an event
trigger at the top of an automation keeps, per bucketing key, the state it
fired into until that state resolves:

- Proactive: the expected events arrive after all. Counted from the start of
  the window that fired, ``threshold`` of them resolve it (the one that
  completes the count is the resolving event). A state that nothing resolves
  is forgotten ``FORGET_AFTER_US`` after it fired, on the events clock, so
  keys that never come back do not pile up.
- Reactive: the window that fired closes (its end, on the events clock; a
  window of ``within: 0`` closes at once). It resolves on the event it fired
  on.

A key that fires again while its state is open: a Reactive state resolves
first (its window closed before the next one began); a Proactive one stays
open, now for the newer firing's window.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from marmot.engine.models.events import Event, dump_event, load_event
from marmot.engine.timestamps import US_PER_S

Key = tuple[str, ...]
# A Proactive state that nothing resolved is forgotten this long after it fired.
FORGET_AFTER_US = 7 * 24 * 3600 * US_PER_S


@dataclass(slots=True)
class OpenState:
    """A firing of one key that has not resolved yet."""

    start: int  # the fired window's start: earlier events do not count toward resolving
    end: int  # the fired window's end: a Reactive state resolves then
    count: int  # expected events counted so far (Proactive)
    event: Event | None  # the event it fired on
    due: int  # Reactive: resolves at; Proactive: forgotten at


# Gets the key, the state that resolved, the resolving event and the processing time.
ResolveSink = Callable[[Key, OpenState, Event | None, int], None]


class Resolutions:
    """The open states of one event trigger, and when they resolve."""

    def __init__(
        self, *, proactive: bool, threshold: int, immediate: bool, sink: ResolveSink
    ) -> None:
        self.proactive = proactive
        self.immediate = immediate  # a window of no length (within: 0)
        self.threshold = threshold
        self.states: dict[Key, OpenState] = {}
        # (due, tiebreak, key, state): stale entries are skipped when they reach the top.
        self._heap: list[tuple[int, int, Key, OpenState]] = []
        self._pushes = 0
        self._sink = sink

    def _put(self, key: Key, state: OpenState) -> None:
        self.states[key] = state
        self._pushes += 1
        heapq.heappush(self._heap, (state.due, self._pushes, key, state))

    def supersede(self, key: Key, now: int) -> None:
        """``key`` is about to fire again: an open Reactive state resolves first
        (its window closed before the next one began)."""
        if self.proactive:
            return
        earlier = self.states.pop(key, None)
        if earlier is not None:
            self._sink(key, earlier, earlier.event, now)

    def fired(
        self, key: Key, start: int, end: int, count: int, event: Event | None, now: int
    ) -> None:
        """The trigger fired for ``key`` on the window ``[start, end)``."""
        if self.proactive:
            self._put(key, OpenState(start, end, count, event, now + FORGET_AFTER_US))
            return
        state = OpenState(start, end, count, event, end)
        if self.immediate:  # a window of no length closes as it fires
            self._sink(key, state, event, now)
            return
        self._put(key, state)

    def expected(self, key: Key, event: Event, occurred: int, now: int) -> None:
        """An expected event of ``key`` was evaluated (Proactive states count it)."""
        if not self.proactive:
            return
        state = self.states.get(key)
        if state is None or occurred < state.start:
            return
        state.count += 1
        if state.count >= self.threshold:
            del self.states[key]
            self._sink(key, state, event, now)

    def advance(self, as_of: int, now: int) -> None:
        """Resolve Reactive states whose window has closed by ``as_of``; forget
        Proactive states past their time."""
        heap = self._heap
        while heap and heap[0][0] <= as_of:
            _, _, key, state = heapq.heappop(heap)
            if self.states.get(key) is not state:
                continue
            del self.states[key]
            if not self.proactive:
                self._sink(key, state, state.event, now)

    def next_deadline(self) -> int | None:
        """When ``advance`` next resolves a Reactive state (Proactive: never needed)."""
        if self.proactive:
            return None
        heap = self._heap
        while heap and self.states.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def items(self) -> Iterator[tuple[Key, OpenState]]:
        """The open states, oldest window first."""
        return iter(sorted(self.states.items(), key=lambda kv: (kv[1].start, kv[0])))

    def snapshot(self) -> list[list[Any]]:
        """The open states as ``[key, start, end, count, event, due]`` rows."""
        return [
            [list(key), o.start, o.end, o.count, dump_event(o.event), o.due]
            for key, o in self.items()
        ]

    def restore(self, rows: list[list[Any]]) -> None:
        """Replace the open states with ``snapshot`` rows."""
        self.clear()
        for key, start, end, count, event, due in rows:
            loaded = load_event(event)
            self._put(tuple(key), OpenState(start, end, count, loaded, due))

    def clear(self) -> None:
        """Forget every open state."""
        self.states.clear()
        self._heap.clear()
