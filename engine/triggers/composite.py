"""Compound and sequence triggers: combining child firings (SEMANTICS §4)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from marmot.engine.models.triggers import CompositeTrigger, SequenceTrigger
from marmot.engine.timestamps import span_us
from marmot.engine.triggers.firing import Firing, dump_firing, load_firing


class CompositeState:
    """What a compound or sequence trigger remembers: each child's latest firing."""

    def __init__(self, trigger: CompositeTrigger, automation_id: UUID) -> None:
        self.trigger = trigger
        self.automation_id = automation_id
        self.is_sequence = isinstance(trigger, SequenceTrigger)
        self.needed = trigger.needed_firings
        self.size = len(trigger.triggers)
        self.within = None if trigger.within is None else span_us(trigger.within)
        self.recorded: dict[int, Firing] = {}

    def child_fired(self, child: int, firing: Firing) -> list[Firing] | None:
        """Record a child's firing; return the firings that complete the parent, or None.

        The parent fires with the last child's triggering event; the caller
        builds the parent's own firing from it.
        """
        if self.needed == 1:
            return [firing]
        now = firing.fired_us
        if self.within is not None:
            horizon = now - self.within
            self.recorded = {c: f for c, f in self.recorded.items() if f.fired_us >= horizon}
        self.recorded[child] = firing
        if not self._is_ready():
            return None
        completed = [self.recorded[c] for c in sorted(self.recorded)]
        self.recorded = {}
        return completed

    def _is_ready(self) -> bool:
        if not self.is_sequence:
            return len(self.recorded) >= self.needed
        if len(self.recorded) != self.size:
            return False
        # Simultaneous firings count in declared order.
        order = sorted(self.recorded, key=lambda c: (self.recorded[c].fired_us, c))
        return order == list(range(self.size))

    def clear(self) -> None:
        """Forget every recorded child firing."""
        self.recorded = {}

    def snapshot(self) -> list[list[Any]]:
        """The recorded child firings as ``[child, firing]`` rows."""
        return [[child, dump_firing(f)] for child, f in sorted(self.recorded.items())]

    def restore(self, data: list[list[Any]]) -> None:
        """Replace the recorded firings with ``snapshot`` rows."""
        self.recorded = {child: load_firing(f, self.automation_id) for child, f in data}
