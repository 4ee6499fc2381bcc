"""What ``explain`` reports about an automation's live state."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel


class BucketView(BaseModel):
    """One open bucket of an event trigger."""

    labels: dict[str, str]
    start: datetime
    end: datetime
    count: int
    last_event_id: UUID | None


class HeldView(BaseModel):
    """The expect events one key holds (SEMANTICS §3.4) and when they occurred."""

    labels: dict[str, str]
    count: int
    oldest: datetime
    newest: datetime


class MetricView(BaseModel):
    """A metric trigger's query, its current value and where it stands."""

    name: str
    operator: str
    threshold: float
    range_s: float
    firing_for_s: float
    # Seconds (duration, lateness) or a percentage (successes); None: no run in the window.
    value: float | None
    samples: int  # runs counted in the window
    tracked_runs: int  # runs remembered, counted or not
    state: str  # ok, pending, fired or recovering
    since: datetime | None  # when it entered that state (events clock)


class TriggerView(BaseModel):
    """One trigger of the tree and what it holds."""

    path: str
    type: str
    posture: str | None = None
    threshold: int | None = None
    within_s: float | None = None
    buckets: list[BucketView] = []
    # All open buckets, when ``buckets`` is one page of them; and how many keys
    # the bucket cap (limits.max_buckets_per_trigger) evicted.
    buckets_total: int = 0
    evicted_buckets: int = 0
    # With Resolved states on: the windows that fired and have not resolved yet.
    unresolved: list[BucketView] = []
    # Proactive triggers with `after`: the expect-only events held per key.
    held: list[HeldView] = []
    recorded_children: dict[str, datetime] = {}
    metric: MetricView | None = None


class Explanation(BaseModel):
    """An automation's state: every trigger's buckets and its next deadline."""

    automation_id: UUID
    name: str
    enabled: bool
    triggers: list[TriggerView]
    next_deadline: datetime | None
    open_buckets: int
