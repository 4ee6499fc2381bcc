"""The system clock: the wall clock and a monotonic one, behind ``engine.clock.Clock``.

Every daemon component that reads time takes a ``Clock`` (default
``SYSTEM_CLOCK``), so tests can drive them with ``engine.clock.ManualClock``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["SYSTEM_CLOCK", "SystemClock"]


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC."""
        return datetime.now(UTC)

    def now_us(self) -> int:
        """The wall-clock time in microseconds since the epoch."""
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        """``time.monotonic()``: seconds, never going back."""
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
"""The clock every component uses unless it is given another."""
