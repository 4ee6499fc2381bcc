"""Dry runs with a verdict per condition: what the engine does with an event, and why.

``DryRun`` evaluates events on its own ``Evaluator`` (fresh, or restored from
a copy of a live automation's snapshot) and reports, per event trigger, the
name against ``expect``/``after``, each ``match`` and ``match_related`` label,
the bucket before and after, and the outcome; per compound or sequence
trigger, its children's firings. Outcomes are read off the real evaluation
(the bucket the engine changed, the firings its sink received), and the
per-pattern details use the engine's own compiled patterns, so a verdict
never disagrees with what the engine does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from marmot.engine.matching import compile_pattern
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.models.resources import ResourceSpecification
from marmot.engine.models.triggers import CompositeTrigger, Posture
from marmot.engine.models.verdicts import (
    BucketState,
    CompositeVerdict,
    EventVerdict,
    IgnoredBecause,
    LabelVerdict,
    LeafOutcome,
    LeafVerdict,
    NameVerdict,
    PatternCheck,
    RelatedVerdict,
)
from marmot.engine.timestamps import from_us, to_us
from marmot.engine.triggers.buckets import Bucket, BucketTrigger, LeafFiring
from marmot.engine.triggers.composite import CompositeState
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing

__all__ = ["DryRun", "check_pattern", "label_verdicts"]

_GLOB_CHARS = frozenset("*?[")


def check_pattern(pattern: str, value: str | None) -> PatternCheck:
    """One pattern against a value, with the engine's own compiled predicate."""
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    kind = "any" if body == "*" else "glob" if _GLOB_CHARS & set(body) else "equals"
    ok = value is not None and compile_pattern(pattern)(value)
    return PatternCheck(pattern=pattern, ok=ok, how=f"not ({kind})" if negated else kind)


def label_verdicts(spec: ResourceSpecification, labels: Mapping[str, str]) -> list[LabelVerdict]:
    """Each label of ``spec`` against ``labels`` (SEMANTICS §2: present, and one
    of its patterns matches; a label with no pattern matches nothing)."""
    verdicts = []
    for label, patterns in spec.patterns().items():
        value = labels.get(label)
        checks = [check_pattern(p, value) for p in patterns]
        verdicts.append(
            LabelVerdict(
                label=label,
                value=value,
                patterns=checks,
                ok=value is not None and any(c.ok for c in checks),
            )
        )
    return verdicts


@dataclass(frozen=True, slots=True)
class _Before:
    """A bucket's values before the event (buckets change in place)."""

    bucket: Bucket | None
    count: int
    state: BucketState | None


class DryRun:
    """Evaluates events on one automation's state and reports verdicts on each."""

    def __init__(
        self,
        automation: Automation,
        state: dict[str, Any] | None = None,
        *,
        resolve: bool = False,
        max_keys: int | None = None,
        is_known: Callable[[UUID], bool] = lambda event_id: False,
    ) -> None:
        """``state``: an ``Evaluator.snapshot`` of the automation (a copy: it is
        changed by the run); None: a fresh state. ``is_known`` says whether an
        event id was processed already (the daemon's log), for ``follows``."""
        self.automation = automation
        self.evaluator = evaluator = Evaluator(automation, resolve=resolve, max_keys=max_keys)
        self._is_known = is_known
        self._seen: set[UUID] = set()
        # What the engine reports during the event under test: leaf firings by
        # leaf, and (child position, completed?) by composite.
        self._leaf_fired: list[list[LeafFiring]] = [[] for _ in evaluator.leaves]
        self._child_fired: list[list[tuple[int, bool]]] = [[] for _ in evaluator.composites]
        for index, leaf in enumerate(evaluator.leaves):
            leaf._sink = self._leaf_sink(index, leaf._sink)
        evaluator.composites = [
            _RecordingComposite(c.trigger, automation.id, self._child_fired[i])
            for i, c in enumerate(evaluator.composites)
        ]
        if state is not None:
            evaluator.restore(state)

    # -- instrumentation: the engine tells what it did --------------------------------

    def _leaf_sink(
        self, index: int, sink: Callable[[LeafFiring], None]
    ) -> Callable[[LeafFiring], None]:
        def record(fired: LeafFiring) -> None:
            self._leaf_fired[index].append(fired)
            sink(fired)

        return record

    def take_leaf_firings(self) -> list[list[LeafFiring]]:
        """What each event trigger fired since the last ``test`` or call, then forget it."""
        taken = [list(fired) for fired in self._leaf_fired]
        for fired in self._leaf_fired:
            fired.clear()
        return taken

    # -- the dry run ---------------------------------------------------------------------

    def test(
        self,
        event: Event,
        now_us: int | None = None,
        *,
        seq: int | None = None,
        is_duplicate: bool = False,
    ) -> EventVerdict:
        """Evaluate one event, processed at ``now_us`` (default: its ``received``,
        else ``occurred``), and report what each trigger did with it.

        ``is_duplicate``: the daemon would drop it as an id it processed already.
        """
        occurred = to_us(event.occurred)
        if now_us is None:
            now_us = to_us(event.received) if event.received else occurred
        blocked = self._blocked(event, is_duplicate)
        evaluator = self.evaluator
        befores = [self._before(leaf, event) for leaf in evaluator.leaves]
        was_held = [
            leaf.held is not None
            and leaf.held.is_held(leaf.matcher.bucketing_key(event), event.id, occurred)
            for leaf in evaluator.leaves
        ]
        recorded_before = [self._recorded(i) for i in range(len(evaluator.composites))]
        for fired in self._leaf_fired:
            fired.clear()
        for children in self._child_fired:
            children.clear()
        firings: list[Firing] = []
        if blocked is None:
            firings = evaluator.apply_at(event, occurred, now_us)
            self._seen.add(event.id)
        leaves = [
            self._leaf_verdict(i, event, occurred, befores[i], was_held[i], blocked)
            for i in range(len(evaluator.leaves))
        ]
        composites = [
            self._composite_verdict(i, recorded_before[i]) for i in range(len(evaluator.composites))
        ]
        fired_ids = [f.id for f in firings]
        return EventVerdict(
            event_id=event.id,
            event=event.event,
            occurred=event.occurred,
            seq=seq,
            fires=bool(firings),
            firing_ids=fired_ids,
            summary=_summary(firings, leaves, composites),
            triggers=leaves,
            composites=composites,
        )

    def _blocked(self, event: Event, is_duplicate: bool) -> IgnoredBecause | None:
        """Why the event would not reach the evaluator at all, if it would not."""
        if not self.automation.enabled:
            return IgnoredBecause.paused
        if is_duplicate or event.id in self._seen:
            return IgnoredBecause.duplicate_id
        leader = event.follows
        if (
            leader is not None
            and leader != event.id
            and leader not in self._seen
            and not self._is_known(leader)
        ):
            return IgnoredBecause.held_for_follows
        return None

    def _before(self, leaf: BucketTrigger, event: Event) -> _Before:
        bucket = leaf.buckets.get(leaf.matcher.bucketing_key(event))
        if bucket is None:
            return _Before(None, 0, None)
        return _Before(bucket, bucket.count, _bucket_state(leaf, bucket))

    def _recorded(self, index: int) -> dict[str, Any]:
        path = self.evaluator._composite_paths[index]
        recorded = self.evaluator.composites[index].recorded
        return {f"{path}.triggers[{c}]": f.fired_at for c, f in sorted(recorded.items())}

    # -- one event trigger -------------------------------------------------------------

    def _leaf_verdict(
        self,
        index: int,
        event: Event,
        occurred: int,
        before: _Before,
        was_held: bool,
        blocked: IgnoredBecause | None,
    ) -> LeafVerdict:
        leaf = self.evaluator.leaves[index]
        trigger, matcher = leaf.trigger, leaf.matcher
        name = event.event
        name_verdict = NameVerdict(
            event=name,
            routed=matcher.interested_in_name(name),
            expect=[check_pattern(p, name) for p in sorted(trigger.expect)],
            expected=matcher.expects(name),
            after=[check_pattern(p, name) for p in sorted(trigger.after)],
            starts_after=matcher.starts_after(name),
        )
        match = label_verdicts(trigger.match, event.resource)
        related = [
            _related_verdict(n, spec, event.related)
            for n, spec in enumerate(trigger.related_specs)
            if spec
        ]
        key = matcher.bucketing_key(event)
        bucket = leaf.buckets.get(key)
        outcome, because, reason = self._outcome(
            leaf, index, event, occurred, before, bucket, was_held, blocked
        )
        if outcome is LeafOutcome.condition_failed:
            reason = _failed_condition(match, related)
        return LeafVerdict(
            path=self.evaluator._leaf_paths[index],
            posture=trigger.posture.value,
            threshold=leaf.threshold,
            within_s=trigger.within.total_seconds(),
            name=name_verdict,
            match=match,
            match_related=related,
            key=matcher.labels(key),
            before=before.state,
            after=_bucket_state(leaf, bucket) if bucket is not None else None,
            outcome=outcome,
            because=because,
            reason=reason,
        )

    def _outcome(
        self,
        leaf: BucketTrigger,
        index: int,
        event: Event,
        occurred: int,
        before: _Before,
        bucket: Bucket | None,
        was_held: bool,
        blocked: IgnoredBecause | None,
    ) -> tuple[LeafOutcome, IgnoredBecause | None, str]:
        matcher, name = leaf.matcher, event.event
        if not matcher.interested_in_name(name):
            return LeafOutcome.not_routed, None, f"{name!r} matches no `expect` or `after` pattern"
        if not matcher.covers(event):
            return LeafOutcome.condition_failed, None, ""
        if blocked is not None:
            return LeafOutcome.ignored, blocked, _BLOCKED[blocked].format(leader=event.follows)
        threshold = leaf.threshold
        if self._leaf_fired[index]:
            if leaf.is_proactive:
                return (
                    LeafOutcome.fires,
                    None,
                    f"fires: its window ended with fewer than {threshold} expected event(s)",
                )
            return LeafOutcome.fires, None, f"fires: reached the threshold of {threshold}"
        expected, opens = matcher.expects(name), matcher.starts_after(name)
        is_new = bucket is not None and bucket is not before.bucket
        if opens and is_new and bucket is not None:
            return (
                LeafOutcome.opens_window,
                None,
                f"opens the key's window until {_at(bucket.end)}"
                + (" (the event that opens a window does not count in it)" if expected else ""),
            )
        gained = 0
        if bucket is not None:
            gained = bucket.count - (before.count if bucket is before.bucket else 0)
        if gained > 0 and bucket is not None:
            if leaf.is_proactive:
                return (
                    LeafOutcome.counts,
                    None,
                    f"counts {bucket.count} of the {threshold} needed by {_at(bucket.end)} "
                    "to keep it from firing",
                )
            where = ""
            if is_new and before.state is not None:
                where = f" in a new window (the last one ended at {_at(before.state.end)})"
            return LeafOutcome.counts, None, f"counts towards {bucket.count} of {threshold}{where}"
        if not expected:
            return (
                LeafOutcome.ignored,
                IgnoredBecause.not_expected,
                "matches only `after`, and the key's window is already open",
            )
        if leaf.held is not None and bucket is None:
            key = matcher.bucketing_key(event)
            if was_held:
                return LeafOutcome.ignored, IgnoredBecause.duplicate_id, "already held"
            if leaf.held.is_held(key, event.id, occurred):
                return (
                    LeafOutcome.held,
                    None,
                    "held for the window a later `after` event opens (SEMANTICS §3.4)",
                )
        state = before.state
        if state is None:
            return (
                LeafOutcome.ignored,
                IgnoredBecause.no_window,
                "no window is open for its key (no `after` event seen)",
            )
        if occurred < to_us(state.start):
            return (
                LeafOutcome.ignored,
                IgnoredBecause.late,
                f"late: occurred at {_at(occurred)}, before its window's start {_at(state.start)}",
            )
        return (
            LeafOutcome.ignored,
            IgnoredBecause.out_of_window,
            f"out of window: occurred at {_at(occurred)}, at or after its window's end "
            f"{_at(state.end)}",
        )

    # -- one compound or sequence trigger ----------------------------------------------

    def _composite_verdict(self, index: int, recorded_before: dict[str, Any]) -> CompositeVerdict:
        composite = self.evaluator.composites[index]
        path = self.evaluator._composite_paths[index]
        trigger = composite.trigger
        children = [f"{path}.triggers[{c}]" for c in range(composite.size)]
        fired = self._child_fired[index]
        fires = any(completed for _, completed in fired)
        recorded_after = self._recorded(index)
        within = trigger.within.total_seconds() if trigger.within is not None else None
        rule = (
            f"needs all {composite.size} children in order"
            if composite.is_sequence
            else f"needs {composite.needed} of {composite.size} children"
        )
        if within is not None:
            rule += f" within {within:g} s"
        if fires:
            reason = f"fires: {rule}, and they fired"
        elif not fired:
            reason = f"no child fired on this event; {rule}, {len(recorded_after)} recorded"
        elif composite.is_sequence and len(recorded_after) == composite.size:
            reason = f"waiting: {rule}, and they fired out of order"
        else:
            reason = f"waiting: {rule}, {len(recorded_after)} recorded"
        return CompositeVerdict(
            path=path,
            type=trigger.type,
            require=composite.needed,
            within_s=within,
            children=children,
            recorded_before=recorded_before,
            fired_children=[children[c] for c, _ in fired],
            recorded_after=recorded_after,
            fires=fires,
            reason=reason,
        )


class _RecordingComposite(CompositeState):
    """A composite's state that also notes each child firing it is told of."""

    def __init__(
        self, trigger: CompositeTrigger, automation_id: UUID, notes: list[tuple[int, bool]]
    ) -> None:
        super().__init__(trigger, automation_id)
        self._notes = notes

    def child_fired(self, child: int, firing: Firing) -> list[Firing] | None:
        completed = super().child_fired(child, firing)
        self._notes.append((child, completed is not None))
        return completed


_BLOCKED = {
    IgnoredBecause.paused: "the automation is paused: it evaluates nothing",
    IgnoredBecause.duplicate_id: "duplicate id: an event with this id was processed already",
    IgnoredBecause.held_for_follows: (
        "held for `follows`: it waits for event {leader}, which has not been seen"
    ),
}


def _related_verdict(
    index: int, spec: ResourceSpecification, related: list[dict[str, str]]
) -> RelatedVerdict:
    resources = [label_verdicts(spec, labels) for labels in related]
    matched = next((n for n, labels in enumerate(resources) if all(v.ok for v in labels)), None)
    return RelatedVerdict(
        spec=index, ok=matched is not None, matched_resource=matched, resources=resources
    )


def _failed_condition(match: list[LabelVerdict], related: list[RelatedVerdict]) -> str:
    for label in match:
        if not label.ok:
            if label.value is None:
                return f"match: the resource has no label {label.label!r}"
            patterns = ", ".join(repr(c.pattern) for c in label.patterns)
            return f"match: {label.label}={label.value!r} matches none of {patterns}"
    for spec in related:
        if not spec.ok:
            if not spec.resources:
                return f"match_related[{spec.spec}]: the event has no related resource"
            return f"match_related[{spec.spec}]: no related resource matches every label"
    return "a condition failed"


def _bucket_state(leaf: BucketTrigger, bucket: Bucket) -> BucketState:
    return BucketState(
        count=bucket.count,
        start=from_us(bucket.start),
        end=from_us(bucket.end),
        deadline=from_us(bucket.end) if leaf.trigger.posture is Posture.Proactive else None,
        last_event_id=bucket.last_event_id,
    )


def _at(value: int | Any) -> str:
    moment = from_us(value) if isinstance(value, int) else value
    return str(moment.isoformat().replace("+00:00", "Z"))


def _summary(
    firings: list[Firing], leaves: list[LeafVerdict], composites: list[CompositeVerdict]
) -> str:
    if firings:
        return f"fires ({len(firings)} firing(s))"
    reached = [v for v in leaves if v.outcome is not LeafOutcome.not_routed]
    if not reached:
        return "not routed: no trigger's `expect` or `after` matches the name"
    return "; ".join(f"{v.path}: {v.reason}" for v in reached)
