"""What a dry run reports: a verdict per condition for each event (``automation test``).

The models travel as the results of ``automations.test`` and
``automations.why``; ``engine.triggers.verdicts`` fills them in from the
engine's own matching and evaluation, so they cannot disagree with it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel


class LeafOutcome(StrEnum):
    """What one event trigger did with one event."""

    not_routed = "not_routed"  # its name matches neither `expect` nor `after`
    condition_failed = "condition_failed"  # a `match` / `match_related` label failed
    fires = "fires"  # the trigger fired on it
    counts = "counts"  # counted towards the threshold, no firing yet
    opens_window = "opens_window"  # an `after` event: it opened the key's window
    held = "held"  # Proactive with `after`: kept for a window opened later (§3.4)
    ignored = "ignored"  # reached the trigger and changed nothing (``reason`` says why)


class IgnoredBecause(StrEnum):
    """Why an event that reached a trigger changed nothing."""

    late = "late"  # occurred before the window's start
    out_of_window = "out_of_window"  # occurred at or after the window's end
    no_window = "no_window"  # `after` set and no window open for the key
    duplicate_id = "duplicate_id"  # the id was processed already
    held_for_follows = "held_for_follows"  # waits for the event it `follows`
    paused = "paused"  # the automation is paused
    not_expected = "not_expected"  # matched only `after`, which opened nothing new


class PatternCheck(BaseModel):
    """One pattern against one value: ✓ or ✗, negation and glob spelled out."""

    pattern: str
    ok: bool
    how: str  # "equals", "glob", "not (equals)", "not (glob)", "any"


class NameVerdict(BaseModel):
    """The event name against `expect` and `after`."""

    event: str
    routed: bool  # the interest test on the name (SEMANTICS §2 a, b)
    expect: list[PatternCheck]
    expected: bool  # `expect` empty or one of its patterns matches
    after: list[PatternCheck]
    starts_after: bool  # one of the `after` patterns matches


class LabelVerdict(BaseModel):
    """One label of `match` (or of one resource of `match_related`)."""

    label: str
    value: str | None
    patterns: list[PatternCheck]
    ok: bool  # present and one of its patterns matches


class RelatedVerdict(BaseModel):
    """One `match_related` specification: some related resource must match it all."""

    spec: int
    ok: bool
    matched_resource: int | None  # the index in the event's `related`, when one matched
    # Per related resource: each label's verdict (the closest miss first shown by the CLI).
    resources: list[list[LabelVerdict]]


class BucketState(BaseModel):
    """A bucket as it was before or after the event."""

    count: int
    start: datetime
    end: datetime
    # Proactive: when it fires unless it reaches the threshold; None for Reactive.
    deadline: datetime | None
    last_event_id: UUID | None


class LeafVerdict(BaseModel):
    """What one event trigger did with the event, condition by condition."""

    path: str
    posture: str
    threshold: int
    within_s: float
    name: NameVerdict
    match: list[LabelVerdict]
    match_related: list[RelatedVerdict]
    key: dict[str, str]
    before: BucketState | None = None
    after: BucketState | None = None
    outcome: LeafOutcome
    because: IgnoredBecause | None = None
    reason: str  # the outcome in words: "counts towards 2 of 3", "late: ..."


class CompositeVerdict(BaseModel):
    """A compound or sequence trigger: its children's firings and its own verdict."""

    path: str
    type: str
    require: int  # child firings needed
    within_s: float | None
    children: list[str]
    recorded_before: dict[str, datetime]
    fired_children: list[str]  # children that fired on this event, in order
    recorded_after: dict[str, datetime]
    fires: bool
    reason: str


class EventVerdict(BaseModel):
    """One event and every trigger's verdict on it."""

    event_id: UUID
    event: str
    occurred: datetime
    seq: int | None = None  # its sequence number, for an event from the log
    fires: bool  # the automation fired on it
    firing_ids: list[UUID]
    summary: str
    triggers: list[LeafVerdict]
    composites: list[CompositeVerdict]


class TestReport(BaseModel):
    """``automations.test``: each event's verdicts, evaluated on a copy of the state."""

    __test__ = False  # not a pytest test class, despite its name

    automation_id: UUID
    name: str
    # "live": a copy of the running automation's state; "empty": a fresh state
    # (a file not stored, or a paused automation, which keeps none).
    state: str
    events: list[EventVerdict]
