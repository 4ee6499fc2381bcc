"""Why did it (not) fire: one logged event, evaluated as it was at the time.

``explain_event`` rebuilds an automation's state from the start of its
current version by evaluating the logged events before the one asked
about (proactive evaluation at each deadline, as the timer does), takes the
per-condition verdicts on that event (``DryRun``), then follows the bucket
it went to through the later events: fired at ..., window ended at ... with
k of N, or still open.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from marmot.engine.errors import NotFound
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.models.history import Aftermath, WhyReport, WhyStatus
from marmot.engine.models.verdicts import EventVerdict, LeafOutcome
from marmot.engine.timestamps import from_us, to_us
from marmot.engine.triggers.buckets import Bucket
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing
from marmot.engine.triggers.verdicts import DryRun

__all__ = ["explain_event"]

# Proactive passes run at one instant, at most (a guard: each pass moves the deadline).
_MAX_PASSES = 1000
_WATCHED = frozenset({LeafOutcome.counts, LeafOutcome.opens_window})


@dataclass(slots=True)
class _Watch:
    """A bucket the event went to, followed through the later events."""

    index: int
    key: tuple[str, ...]
    bucket: Bucket
    result: Aftermath | None = None


def _advance_until(evaluator: Evaluator, now_us: int) -> list[Firing]:
    """Proactive evaluation at every deadline up to ``now_us`` (events clock)."""
    firings: list[Firing] = []
    for _ in range(_MAX_PASSES):
        deadline = evaluator.next_deadline_us()
        if deadline is None or deadline > now_us:
            break
        as_of = from_us(now_us if deadline < 0 else deadline)
        firings.extend(evaluator.advance(as_of, as_of))
    return firings


def explain_event(
    automation: Automation,
    events: Iterable[tuple[int, Event]],
    target: UUID,
    *,
    state: dict[str, Any] | None = None,
    since: datetime | None = None,
    resolve: bool = False,
    max_keys: int | None = None,
) -> WhyReport:
    """What ``automation`` did with the logged event ``target``.

    ``events``: the log in arrival order from the start of the automation's
    current version (``since``), or from the checkpoint ``state`` was saved
    at, through the target and on. Raises
    ``NotFound`` when the target is not among them.
    """
    dry = DryRun(automation, state, resolve=resolve, max_keys=max_keys, is_known=lambda _: True)
    evaluator = dry.evaluator
    verdict: EventVerdict | None = None
    seq = 0
    replayed = 0
    watches: list[_Watch] = []
    last_us = 0
    for logged_seq, event in events:
        occurred = to_us(event.occurred)
        now = to_us(event.received) if event.received else occurred
        last_us = max(last_us, now)
        firings = _advance_until(evaluator, now)
        if verdict is not None:
            _follow(dry, watches, firings)
        if verdict is None and event.id == target:
            verdict = dry.test(event, now, seq=logged_seq)
            seq = logged_seq
            watches = _watches(dry, event, verdict)
            dry.take_leaf_firings()
            if not watches:
                break
            continue
        firings = evaluator.apply_at(event, occurred, now)
        if verdict is None:
            replayed += 1
            dry.take_leaf_firings()
        else:
            _follow(dry, watches, firings)
            if all(w.result is not None for w in watches):
                break
    if verdict is None:
        raise NotFound(f"event {target} is not in the log since the automation's current version")
    for watch in watches:
        if watch.result is None:
            watch.result = _unfinished(dry, watch)
    return WhyReport(
        automation_id=automation.id,
        name=automation.name,
        event_id=target,
        seq=seq,
        status=_status(verdict),
        summary=verdict.summary,
        verdict=verdict,
        aftermath=[w.result for w in watches if w.result is not None],
        replayed_events=replayed,
        since=since,
    )


def _status(verdict: EventVerdict) -> WhyStatus:
    outcomes = {leaf.outcome for leaf in verdict.triggers}
    if outcomes <= {LeafOutcome.not_routed}:
        return WhyStatus.not_interesting
    if outcomes <= {LeafOutcome.not_routed, LeafOutcome.condition_failed}:
        return WhyStatus.condition_failed
    return WhyStatus.evaluated


def _watches(dry: DryRun, event: Event, verdict: EventVerdict) -> list[_Watch]:
    watches = []
    for index, (leaf, leaf_verdict) in enumerate(
        zip(dry.evaluator.leaves, verdict.triggers, strict=True)
    ):
        if leaf_verdict.outcome not in _WATCHED:
            continue
        key = leaf.matcher.bucketing_key(event)
        bucket = leaf.buckets.get(key)
        if bucket is not None:
            watches.append(_Watch(index, key, bucket))
    return watches


def _follow(dry: DryRun, watches: list[_Watch], firings: list[Firing]) -> None:
    """Note what happened to each watched bucket in the step just taken."""
    fired = dry.take_leaf_firings()
    for watch in watches:
        if watch.result is not None:
            continue
        leaf = dry.evaluator.leaves[watch.index]
        path = leaf_path(dry, watch.index)
        labels = leaf.matcher.labels(watch.key)
        mine = [
            f for f in fired[watch.index] if f.key == watch.key and f.start == watch.bucket.start
        ]
        if mine:
            watch.result = Aftermath(
                path=path,
                key=labels,
                what="fired",
                at=from_us(mine[0].fired_us),
                count=watch.bucket.count,
                threshold=leaf.threshold,
                firing_ids=[f.id for f in firings],
                detail=f"the bucket fired at {_at(mine[0].fired_us)}",
            )
        elif leaf.buckets.get(watch.key) is not watch.bucket:
            bucket = watch.bucket
            watch.result = Aftermath(
                path=path,
                key=labels,
                what="expired",
                at=from_us(bucket.end),
                count=bucket.count,
                threshold=leaf.threshold,
                detail=(
                    f"the window ended at {_at(bucket.end)} with {bucket.count} of "
                    f"{leaf.threshold} and did not fire"
                ),
            )


def _unfinished(dry: DryRun, watch: _Watch) -> Aftermath:
    leaf = dry.evaluator.leaves[watch.index]
    bucket = watch.bucket
    return Aftermath(
        path=leaf_path(dry, watch.index),
        key=leaf.matcher.labels(watch.key),
        what="open",
        at=from_us(bucket.end),
        count=bucket.count,
        threshold=leaf.threshold,
        detail=(
            f"the window is still open: {bucket.count} of {leaf.threshold} until {_at(bucket.end)}"
        ),
    )


def leaf_path(dry: DryRun, index: int) -> str:
    """The path (``trigger.triggers[0]``) of the event trigger at ``index``."""
    return dry.evaluator._leaf_paths[index]


def _at(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")
