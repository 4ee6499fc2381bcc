"""Which automations care about an event: the router's interest index (SEMANTICS §2).

Streams repeat a few event names, so the name part of the interest test is
answered once per distinct name and cached; only the automations that pass it
run the resource part. Most automations of a large fleet name the resource
they watch (``match: {prefect.resource.id: ...}``, a deployment's or a
flow's): per name, those are filed under their resource ids, so an event is
tested only against the automations that could accept its resource.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from marmot.engine.matching import TriggerMatcher
from marmot.engine.models.events import Event

K = TypeVar("K", bound=Hashable)
_CACHE_LIMIT = 8192
_RESOURCE_ID = "prefect.resource.id"

# (registration position, key, the triggers whose resource test is still to
# run, or None when one of them takes every resource)
_Entry = tuple[int, K, tuple[TriggerMatcher, ...] | None]


@dataclass(slots=True)
class _Named(Generic[K]):
    """The keys interested in one event name."""

    anyone: list[_Entry[K]] = field(default_factory=list)  # any resource may do
    by_resource: dict[str, list[_Entry[K]]] = field(default_factory=dict)


class InterestIndex(Generic[K]):
    """Maps events to the keys (automation ids) whose triggers are interested."""

    def __init__(self) -> None:
        self._matchers: dict[K, Sequence[TriggerMatcher]] = {}
        self._by_name: dict[str, _Named[K]] = {}
        # Keys by the literal names their triggers take (every trigger's names
        # literal), and the keys that may take other names: a name not seen
        # before is tested against those two groups only, not the whole fleet.
        self._literal: dict[str, set[K]] = {}
        self._wild: set[K] = set()
        self._order: dict[K, int] = {}
        self._added = 0

    def __len__(self) -> int:
        return len(self._matchers)

    def __contains__(self, key: object) -> bool:
        return key in self._matchers

    def set(self, key: K, matchers: Sequence[TriggerMatcher]) -> None:
        """Add or replace the event-trigger matchers registered under ``key``."""
        self._unfile(key)
        if key not in self._matchers:
            self._order[key] = self._added  # registration order (dict order)
            self._added += 1
        self._matchers[key] = tuple(matchers)
        names = [m.literal_names for m in matchers]
        if any(n is None for n in names):
            self._wild.add(key)
        else:
            for name in frozenset().union(*(n for n in names if n is not None)):
                self._literal.setdefault(name, set()).add(key)
        self._by_name.clear()

    def remove(self, key: K) -> None:
        """Forget ``key``; unknown keys are ignored."""
        if key in self._matchers:
            self._unfile(key)
            del self._matchers[key]
            del self._order[key]
            self._by_name.clear()

    def _unfile(self, key: K) -> None:
        self._wild.discard(key)
        for name in {n for m in self._matchers.get(key, ()) for n in m.literal_names or ()}:
            keys = self._literal.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._literal[name]

    def _named(self, name: str) -> _Named[K]:
        found = self._by_name.get(name)
        if found is None:
            found = _Named()
            order = self._order
            candidates = sorted(self._wild | self._literal.get(name, set()), key=order.__getitem__)
            for key in candidates:
                position, matchers = order[key], self._matchers[key]
                named = tuple(m for m in matchers if m.interested_in_name(name))
                if not named:
                    continue
                if any(m.covers_all for m in named):
                    found.anyone.append((position, key, None))
                    continue
                entry = (position, key, named)
                ids = [m.resource_ids for m in named]
                if any(i is None for i in ids):
                    found.anyone.append(entry)
                    continue
                for resource_id in frozenset().union(*(i for i in ids if i is not None)):
                    found.by_resource.setdefault(resource_id, []).append(entry)
            if len(self._by_name) >= _CACHE_LIMIT:
                self._by_name.clear()
            self._by_name[name] = found
        return found

    def route(self, event: Event) -> list[K]:
        """Keys with a trigger fully interested in ``event``, in registration order."""
        named = self._named(event.event)
        scoped: list[_Entry[K]] = []
        if named.by_resource:
            resource_id = event.resource.get(_RESOURCE_ID)
            if resource_id is not None:
                scoped = named.by_resource.get(resource_id, [])
        if not scoped:
            return [
                key
                for _, key, pending in named.anyone
                if pending is None or any(m.covers(event) for m in pending)
            ]
        hits = [
            (position, key)
            for position, key, pending in (*named.anyone, *scoped)
            if pending is None or any(m.covers(event) for m in pending)
        ]
        hits.sort()
        return [key for _, key in hits]
