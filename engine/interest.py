"""Which automations care about an event: the router's interest index (SEMANTICS §2).

Streams repeat a few event names, so the name part of the interest test is
answered once per distinct name and cached; only the automations that pass it
run the resource part.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

from marmot.engine.matching import TriggerMatcher
from marmot.engine.models.events import Event

K = TypeVar("K", bound=Hashable)
_CACHE_LIMIT = 8192


class InterestIndex(Generic[K]):
    """Maps events to the keys (automation ids) whose triggers are interested."""

    def __init__(self) -> None:
        self._matchers: dict[K, Sequence[TriggerMatcher]] = {}
        self._by_name: dict[str, tuple[tuple[K, tuple[TriggerMatcher, ...] | None], ...]] = {}

    def __len__(self) -> int:
        return len(self._matchers)

    def __contains__(self, key: object) -> bool:
        return key in self._matchers

    def set(self, key: K, matchers: Sequence[TriggerMatcher]) -> None:
        """Add or replace the event-trigger matchers registered under ``key``."""
        self._matchers[key] = tuple(matchers)
        self._by_name.clear()

    def remove(self, key: K) -> None:
        """Forget ``key``; unknown keys are ignored."""
        if self._matchers.pop(key, None) is not None:
            self._by_name.clear()

    def _entries(self, name: str) -> tuple[tuple[K, tuple[TriggerMatcher, ...] | None], ...]:
        # Per name: each key with a trigger whose name test (a, b) accepts it,
        # with the triggers whose resource test (c) is still to run, or None
        # when one of them takes every resource.
        found = self._by_name.get(name)
        if found is None:
            entries = []
            for key, matchers in self._matchers.items():
                named = tuple(m for m in matchers if m.interested_in_name(name))
                if named:
                    entries.append((key, None if any(m.covers_all for m in named) else named))
            found = tuple(entries)
            if len(self._by_name) >= _CACHE_LIMIT:
                self._by_name.clear()
            self._by_name[name] = found
        return found

    def route(self, event: Event) -> list[K]:
        """Keys with a trigger fully interested in ``event``, in registration order."""
        return [
            key
            for key, pending in self._entries(event.event)
            if pending is None or any(m.covers(event) for m in pending)
        ]
