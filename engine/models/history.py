"""What ``automations.history`` and ``automations.why`` report.

History: an automation's firings as the daemon recorded them (its
``automation.triggered`` / ``.resolved`` events), each with its actions'
outcomes. Why: what the automation did with one logged event at the time,
and what the bucket it went to did afterwards.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel

from marmot.engine.models.verdicts import EventVerdict


class ActionOutcome(BaseModel):
    """One action of one firing, from the action log and its ``action.*`` events."""

    index: int
    type: str | None
    status: str  # executed, failed, claimed (still running), or unknown
    detail: str  # the failure's reason, or what the action did
    attempts: int | None
    started: datetime | None
    finished: datetime | None
    duration_s: float | None


class FiringRecord(BaseModel):
    """One firing (or resolution) of the automation."""

    state: str  # Triggered or Resolved
    fired_at: datetime
    event_id: UUID  # its automation.triggered (or .resolved) event
    firing_id: UUID | None  # known when an action of it was claimed
    labels: dict[str, str]
    triggering_event_id: UUID | None
    triggering_event: str | None  # the triggering event's name
    actions: list[ActionOutcome]


class IncidentRecord(BaseModel):
    """An incident one of its firings opened."""

    id: UUID
    firing_id: UUID
    title: str
    severity: str
    status: str
    created: datetime


class History(BaseModel):
    """A page of an automation's history, newest first; ``next`` reads on."""

    automation_id: UUID
    name: str
    firings: list[FiringRecord]
    incidents: list[IncidentRecord]
    next: str | None = None


class WhyStatus(StrEnum):
    """Where the event stands with the automation."""

    not_interesting = "not_interesting"  # no trigger's name patterns route it here
    condition_failed = "condition_failed"  # routed, and a match label failed
    evaluated = "evaluated"  # the triggers evaluated it (see the verdict)
    not_evaluated = "not_evaluated"  # before the automation's current version, or held


class Aftermath(BaseModel):
    """What the bucket an event went to did after it."""

    path: str
    key: dict[str, str]
    what: str  # fired, expired, open, gone
    at: datetime | None
    count: int | None
    threshold: int
    firing_ids: list[UUID] = []
    detail: str


class WhyReport(BaseModel):
    """``automations.why``: the event, the verdict at the time, the aftermath."""

    automation_id: UUID
    name: str
    event_id: UUID
    seq: int
    status: WhyStatus
    summary: str
    verdict: EventVerdict | None
    aftermath: list[Aftermath]
    replayed_events: int  # log events evaluated to rebuild the state at the time
    since: datetime | None  # the state was rebuilt from this version's start
