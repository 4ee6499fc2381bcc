"""Clocks: the ``Clock`` protocol, a settable test clock, and the events clock (SEMANTICS §6)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from marmot.engine.timestamps import from_us, to_us


class Clock(Protocol):
    """The one shape of clock Marmot reads time through (the engine never reads the
    wall clock itself; the daemon's components are given a clock, tests a
    ``ManualClock``)."""

    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC."""
        ...

    def now_us(self) -> int:
        """The wall-clock time in microseconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for durations and time limits."""
        ...


class ManualClock:
    """A clock that moves only when told to: for tests and simulated replay.

    Its monotonic time is the seconds it has been moved forward since it began.
    """

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._start = start

    def now(self) -> datetime:
        """The time the clock was last set to."""
        return self._now

    def now_us(self) -> int:
        """``now`` in microseconds."""
        return to_us(self._now)

    def monotonic(self) -> float:
        """Seconds since the clock began (set backwards, it goes back too)."""
        return (self._now - self._start).total_seconds()

    def set(self, when: datetime) -> None:
        """Move the clock to ``when`` (forwards or backwards)."""
        self._now = when

    def advance(self, by: timedelta | float) -> datetime:
        """Move the clock forward; return the new time."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        self._now += step
        return self._now


class EventsClock:
    """How far behind real time event processing runs (SEMANTICS §6).

    ``observe`` every event as it is processed; ``as_of(wall)`` is the time
    proactive evaluation should use: ``wall + offset``, where the offset is
    ``events_clock - last_seen`` (never positive).

    ``max_lag_us`` (Marmot's bound; None: Prefect's rule alone) keeps the
    offset from going below ``-max_lag_us``: an event that occurred further
    behind the wall clock counts as if it occurred ``max_lag_us`` ago, so one
    publisher with a lagging clock (or replaying old events) cannot hold back
    every proactive deadline. ``behind`` counts such events.
    """

    def __init__(self, max_lag_us: int | None = None) -> None:
        self.max_lag_us = max_lag_us
        self.behind = 0
        self._clock: int | None = None
        self._seen_at: int | None = None

    def observe(self, occurred: datetime, wall: datetime) -> None:
        """Record that an event that occurred at ``occurred`` is processed at ``wall``."""
        self.observe_us(to_us(occurred), to_us(wall))

    def observe_us(self, occurred: int, wall: int) -> None:
        """``observe`` in microseconds."""
        # An event from the future is clamped to now, so the clock never runs ahead.
        stamp = occurred if occurred < wall else wall
        if self.max_lag_us is not None and stamp < wall - self.max_lag_us:
            stamp = wall - self.max_lag_us
            self.behind += 1
        if self._clock is None or stamp >= self._clock:
            self._clock = stamp
        self._seen_at = wall

    def offset_us(self) -> int:
        """``events_clock - last_seen`` in microseconds; 0 before any event."""
        if self._clock is None or self._seen_at is None:
            return 0
        return self._clock - self._seen_at

    def offset(self) -> timedelta:
        """``events_clock - last_seen``; zero before any event."""
        return timedelta(microseconds=self.offset_us())

    def as_of(self, wall: datetime) -> datetime:
        """The events-clock time that corresponds to wall time ``wall``."""
        return from_us(to_us(wall) + self.offset_us())

    def snapshot(self) -> dict[str, Any]:
        """The clock's state as plain values."""
        return {"clock": self._clock, "seen_at": self._seen_at}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with one from ``snapshot``."""
        self._clock = state.get("clock")
        self._seen_at = state.get("seen_at")
