"""How far the daemon's start-up has got: its phase and the automations recovered.

The daemon moves a ``StartupProgress`` through the phases and the service
counts the automations it has recovered; the RPC and HTTP faces read it, so
an operator can tell a daemon that is starting from one that is gone. It is
only touched on the daemon's event loop, so it needs no lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from marmot.actors.clock import SYSTEM_CLOCK


class StartupPhase(StrEnum):
    """The steps of a start-up, in order; ``SERVING`` once every RPC method answers."""

    OPENING_STORE = "opening_store"
    STARTING_RAY = "starting_ray"
    RECOVERING_AUTOMATIONS = "recovering_automations"
    STARTING_INGEST = "starting_ingest"
    SERVING = "serving"

    @property
    def label(self) -> str:
        """The phase as people read it: ``"recovering automations"``."""
        return _LABELS[self]


_LABELS = {
    StartupPhase.OPENING_STORE: "opening the store",
    StartupPhase.STARTING_RAY: "starting Ray",
    StartupPhase.RECOVERING_AUTOMATIONS: "recovering automations",
    StartupPhase.STARTING_INGEST: "starting ingest",
    StartupPhase.SERVING: "serving",
}


@dataclass(slots=True)
class StartupProgress:
    """The current phase, the automations recovered so far, and when start-up began.

    ``started_at`` is in monotonic seconds (``Clock.monotonic``); readers pass
    their own ``now`` to ``elapsed_s``.
    """

    started_at: float = field(default_factory=SYSTEM_CLOCK.monotonic)
    phase: StartupPhase = StartupPhase.OPENING_STORE
    automations_total: int = 0
    automations_recovered: int = 0

    @property
    def is_serving(self) -> bool:
        """Whether start-up is over and the daemon serves every method."""
        return self.phase is StartupPhase.SERVING

    @property
    def automations_remaining(self) -> int:
        """Automations still to be recovered (0 outside the recovery phase's work)."""
        return max(self.automations_total - self.automations_recovered, 0)

    def enter(self, phase: StartupPhase) -> None:
        """Move on to ``phase``."""
        self.phase = phase

    def begin_recovery(self, total: int) -> None:
        """Enter the recovery phase with ``total`` automations to recover."""
        self.phase = StartupPhase.RECOVERING_AUTOMATIONS
        self.automations_total = total
        self.automations_recovered = 0

    def recovered_one(self) -> None:
        """Count one more automation recovered from its checkpoint and the log."""
        self.automations_recovered += 1

    def elapsed_s(self, now: float) -> float:
        """Seconds from the start of start-up to ``now`` (monotonic seconds)."""
        return max(now - self.started_at, 0.0)

    def describe(self) -> str:
        """The phase as a phrase: ``"recovering automations (12 of 40)"``."""
        label = self.phase.label
        if self.phase is StartupPhase.RECOVERING_AUTOMATIONS:
            return f"{label} ({self.automations_recovered} of {self.automations_total})"
        return label
