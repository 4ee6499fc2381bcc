"""Rate-limiting log lines: at most one per key per interval, counting the rest.

Bad input can arrive thousands of times a second; the log gets one line per
reason (or per webhook) every few seconds, each saying how many it left out.
"""

from __future__ import annotations

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.clock import Clock


class LogThrottle:
    """Whether a line for ``key`` may be logged now."""

    def __init__(self, interval_s: float = 5.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None to stay quiet; else how many lines for ``key`` were left out since
        the last one."""
        now = self._clock.monotonic()
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._skipped.pop(key, 0)
