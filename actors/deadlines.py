"""What the daemon has told the timer: each automation's last deadline sent.

Only changes go to the timer (an outcome repeats the deadlines of every
automation it touched), and the count of automations with a deadline says
whether the timer needs the events clock's offset at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class DeadlineLedger:
    """The last deadline (events-clock µs, or None) sent for each automation."""

    def __init__(self) -> None:
        self._sent: dict[str, int | None] = {}
        self._timed = 0

    @property
    def timed(self) -> int:
        """How many automations have a deadline with the timer."""
        return self._timed

    def changed(self, deadlines: Mapping[str, int | None]) -> dict[str, int | None]:
        """Record ``deadlines``; return those that differ from what was sent."""
        sent = self._sent
        changed = {a: d for a, d in deadlines.items() if a not in sent or sent[a] != d}
        for automation_id, deadline in changed.items():
            self._timed += (deadline is not None) - (sent.get(automation_id) is not None)
        sent.update(changed)
        return changed

    def pending(self) -> Iterator[tuple[str, int]]:
        """Every automation with a deadline, and the deadline (for a restarted timer)."""
        return ((a, d) for a, d in self._sent.items() if d is not None)
