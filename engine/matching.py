"""Pattern matching, interest and bucketing keys (SEMANTICS §2).

Patterns are compiled once per trigger into small predicates; the per-name
results of the interest test are cached, since streams repeat a few event
names millions of times.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import translate

from marmot.engine.models.events import Event
from marmot.engine.models.resources import ResourceSpecification
from marmot.engine.models.triggers import EventTrigger

Predicate = Callable[[str], bool]
_GLOB_CHARS = frozenset("*?[")
# Bounds the per-trigger name caches against streams with unbounded name sets.
_NAME_CACHE_LIMIT = 4096


def _glob(pattern: str) -> Predicate:
    """Case-sensitive ``fnmatchcase`` for one pattern, compiled."""
    if not _GLOB_CHARS & set(pattern):
        return pattern.__eq__
    if pattern == "*":
        return lambda value: True
    match = re.compile(translate(pattern)).match
    return lambda value: match(value) is not None


def compile_pattern(pattern: str) -> Predicate:
    """A predicate for one pattern with ``!`` negation (SEMANTICS §2)."""
    if pattern.startswith("!"):
        positive = _glob(pattern[1:])
        return lambda value: not positive(value)
    return _glob(pattern)


def pattern_matches(pattern: str, value: str | None) -> bool:
    """Whether ``value`` matches ``pattern``; a missing value matches nothing."""
    return value is not None and compile_pattern(pattern)(value)


def _any_of(patterns: Sequence[str]) -> Predicate:
    predicates = [compile_pattern(p) for p in patterns]
    if len(predicates) == 1:
        return predicates[0]
    return lambda value: any(p(value) for p in predicates)


class CompiledSpec:
    """A resource specification compiled to per-label predicates."""

    __slots__ = ("_checks", "_literals")

    def __init__(self, spec: ResourceSpecification) -> None:
        patterns = spec.patterns()
        self._checks: tuple[tuple[str, Predicate], ...] = tuple(
            (label, _any_of(values) if values else (lambda value: False))
            for label, values in patterns.items()
        )
        self._literals = {
            label: frozenset(values)
            for label, values in patterns.items()
            if not any(_GLOB_CHARS & set(v) or v.startswith("!") for v in values)
        }

    def literal_values(self, label: str) -> frozenset[str] | None:
        """The only values ``label`` may have to match, when its patterns are all
        literal (no glob, no ``!``); None when it may have others (or any)."""
        return self._literals.get(label)

    @property
    def is_empty(self) -> bool:
        """True when the specification places no condition."""
        return not self._checks

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Every label of the spec is present and matches one of its patterns."""
        for label, check in self._checks:
            value = labels.get(label)
            if value is None or not check(value):
                return False
        return True

    def includes(self, resources: Iterable[Mapping[str, str]]) -> bool:
        """Empty, or at least one of ``resources`` matches."""
        if not self._checks:
            return True
        return any(self.matches(r) for r in resources)


def name_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """SEMANTICS §2(b): literal patterns where ``*`` is one or more characters,
    joined with ``|`` and anchored at the start only."""
    alternatives = [".+".join(re.escape(part) for part in p.split("*")) for p in patterns]
    if not alternatives:
        return re.compile(".+")
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


class TriggerMatcher:
    """The matching rules of one event trigger, compiled once."""

    __slots__ = (
        "_after",
        "_expect",
        "_expects",
        "_for_each",
        "_has_related_label",
        "_interest",
        "_literal_names",
        "_match",
        "_name_regex",
        "_names",
        "_related",
        "_starts_after",
        "has_after",
    )

    def __init__(self, trigger: EventTrigger) -> None:
        self._expect = [compile_pattern(p) for p in sorted(trigger.expect)]
        self._after = [compile_pattern(p) for p in sorted(trigger.after)]
        self.has_after = bool(trigger.after)
        names = sorted(trigger.expect | trigger.after)
        # (a) plain fnmatchcase over expect + after, with no `!` handling.
        self._names: list[Predicate] | None = [_glob(p) for p in names] if trigger.expect else None
        literal = trigger.expect and not any(_GLOB_CHARS & set(p) for p in names)
        self._literal_names = frozenset(names) if literal else None
        # (b) an empty `expect` makes the regex "any non-empty name". With literal
        # names, (a) is equality, which (b)'s anchored prefix match always passes:
        # no regex (compiling 10,000 of them held up a fleet's restart).
        self._name_regex = None if literal else name_regex(names if trigger.expect else [])
        self._match = CompiledSpec(trigger.match)
        self._related = tuple(
            c for c in (CompiledSpec(s) for s in trigger.related_specs) if not c.is_empty
        )
        self._for_each = tuple(sorted(trigger.for_each))
        self._has_related_label = any(label.startswith("related:") for label in self._for_each)
        self._interest: dict[str, bool] = {}
        self._expects: dict[str, bool] = {}
        self._starts_after: dict[str, bool] = {}

    @property
    def for_each(self) -> tuple[str, ...]:
        """The ``for_each`` labels in key order (sorted)."""
        return self._for_each

    def interested_in_name(self, name: str) -> bool:
        """Parts (a) and (b) of the interest test: the event name alone."""
        cached = self._interest.get(name)
        if cached is None:
            regex = self._name_regex
            cached = (self._names is None or any(p(name) for p in self._names)) and (
                regex is None or regex.match(name) is not None
            )
            _remember(self._interest, name, cached)
        return cached

    @property
    def covers_all(self) -> bool:
        """True when part (c) accepts every event: no ``match`` or ``match_related``."""
        return self._match.is_empty and not self._related

    @property
    def literal_names(self) -> frozenset[str] | None:
        """The only event names parts (a) and (b) accept, when ``expect`` is not empty
        and every ``expect``/``after`` pattern is literal (no glob): (a) is then
        equality; None when other names may pass. (For the interest index: other
        automations need not be asked about a name.)"""
        return self._literal_names

    @property
    def resource_ids(self) -> frozenset[str] | None:
        """The only resource ids part (c) accepts, when ``match`` names them
        literally; None when it accepts others. (For the interest index: events of
        any other resource need not be tested.)"""
        return self._match.literal_values("prefect.resource.id")

    def covers(self, event: Event) -> bool:
        """Part (c): ``match`` includes the resource, each ``match_related`` the related."""
        if not self._match.matches(event.resource):
            return False
        related = event.related
        return all(spec.includes(related) for spec in self._related)

    def is_interested(self, event: Event) -> bool:
        """The whole interest test of SEMANTICS §2."""
        return self.interested_in_name(event.event) and self.covers(event)

    def expects(self, name: str) -> bool:
        """True when ``expect`` is empty or one of its patterns matches (``!``-aware)."""
        cached = self._expects.get(name)
        if cached is None:
            cached = not self._expect or any(p(name) for p in self._expect)
            _remember(self._expects, name, cached)
        return cached

    def starts_after(self, name: str) -> bool:
        """True when one of the ``after`` patterns matches (``!``-aware)."""
        cached = self._starts_after.get(name)
        if cached is None:
            cached = any(p(name) for p in self._after)
            _remember(self._starts_after, name, cached)
        return cached

    def bucketing_key(self, event: Event) -> tuple[str, ...]:
        """The event's value for each ``for_each`` label, ``""`` when missing."""
        labels = self._for_each
        if not labels:
            return ()
        if len(labels) == 1 and not self._has_related_label:
            # The common case (one resource label), without the generic path.
            return (event.resource.get(labels[0]) or "",)
        return tuple(event.find_label(label) or "" for label in labels)

    def labels(self, key: tuple[str, ...]) -> dict[str, str]:
        """A bucketing key as the firing's ``{label: value}`` map."""
        return dict(zip(self._for_each, key, strict=True))


def _remember(cache: dict[str, bool], name: str, value: bool) -> None:
    if len(cache) >= _NAME_CACHE_LIMIT:
        cache.clear()
    cache[name] = value
