"""What ``backtests.start`` / ``backtests.read`` report: a backtest's progress and result.

A backtest runs automations over the daemon's own event log on ``marmot
replay``'s simulated clock and lists the firings they would have made; with
a live automation to compare, it lines them up against what that one fired.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel


class BacktestFiring(BaseModel):
    """A firing, as ``marmot replay`` prints it (SEMANTICS §7)."""

    automation: str
    state: str
    labels: dict[str, str]
    event_id: UUID | None
    fired_at: datetime


class KeyCount(BaseModel):
    """How many times one ``for_each`` key fired."""

    labels: dict[str, str]
    firings: int


class Comparison(BaseModel):
    """The backtest's firings against the live automation's, matched on key and
    triggering event."""

    automation: str
    automation_id: UUID
    live_firings: int
    matched: int
    only_backtest: list[BacktestFiring]
    only_live: list[BacktestFiring]


class BacktestReport(BaseModel):
    """A finished backtest."""

    events: int  # log events replayed
    since: datetime | None
    until: datetime
    elapsed_s: float
    events_per_s: float
    firings_total: int
    firings: list[BacktestFiring]  # at most the first ``limit`` of them, in time order
    per_key: list[KeyCount]  # most firings first
    comparison: Comparison | None = None


class BacktestJob(BaseModel):
    """A backtest the daemon runs in a Ray task: where it stands."""

    id: UUID
    state: str  # running, done or failed
    events_done: int
    events_total: int | None
    started: datetime
    error: str | None = None
    report: BacktestReport | None = None
