"""The body of an automation actor: one or more automations' evaluators.

One actor per automation is the default; ``automations_per_actor`` packs
several into one process. The actor holds state and calls the engine;
batches are applied in order. Events for automations it does not host (Ray
restarted it empty) are reported back, so the daemon reloads them and sends
those events again.
"""

from __future__ import annotations

import logging
from typing import Any

from marmot.actors.wire import Batch, Outcome
from marmot.engine.evaluator import Evaluator
from marmot.engine.firing import Firing
from marmot.engine.models.automations import Automation
from marmot.engine.timestamps import from_us, to_us

log = logging.getLogger(__name__)


class AutomationHost:
    """Evaluates the automations placed in this actor."""

    def __init__(self) -> None:
        self._evaluators: dict[str, Evaluator] = {}
        self._applied_seq = 0

    def ping(self) -> int:
        """Liveness check; returns how many automations the actor hosts."""
        return len(self._evaluators)

    def load(self, document: str, state: dict[str, Any] | None = None) -> int | None:
        """Host an automation (JSON), fresh or from a snapshot; returns its next deadline.

        Loading an automation that is already here replaces it and resets its
        state (SEMANTICS §5).
        """
        automation = Automation.model_validate_json(document)
        evaluator = Evaluator(automation)
        if state is not None:
            evaluator.restore(state)
        self._evaluators[str(automation.id)] = evaluator
        return evaluator.next_deadline_us()

    def unload(self, automation_id: str) -> bool:
        """Stop hosting an automation; returns whether it was here."""
        return self._evaluators.pop(automation_id, None) is not None

    def apply(self, blob: bytes) -> bytes:
        """Evaluate a batch of events (see ``wire.Batch``); returns a packed ``Outcome``."""
        firings: list[Firing] = []
        touched: set[str] = set()
        missing: set[str] = set()
        evaluated = 0
        for seq, targets, event in Batch.unpack(blob):
            occurred = to_us(event.occurred)
            now = to_us(event.received) if event.received else occurred
            for automation_id in targets:
                evaluator = self._evaluators.get(automation_id)
                if evaluator is None:
                    # Not hosted here: Ray restarted this actor empty. The
                    # daemon reloads it when the outcome says so.
                    missing.add(automation_id)
                    continue
                firings.extend(evaluator.apply_at(event, occurred, now))
                touched.add(automation_id)
                evaluated += 1
            if seq > self._applied_seq:
                self._applied_seq = seq
        deadlines = {a: self._evaluators[a].next_deadline_us() for a in touched}
        return Outcome(firings, deadlines, self._applied_seq, evaluated, sorted(missing)).pack()

    def expire(self, as_of_us: int, now_us: int, automation_ids: list[str]) -> bytes:
        """Proactive evaluation of the given automations; returns a packed ``Outcome``."""
        firings: list[Firing] = []
        deadlines: dict[str, int | None] = {}
        missing: list[str] = []
        as_of, now = from_us(as_of_us), from_us(now_us)
        for automation_id in automation_ids:
            evaluator = self._evaluators.get(automation_id)
            if evaluator is None:
                missing.append(automation_id)
                continue
            firings.extend(evaluator.advance(as_of, now))
            deadlines[automation_id] = evaluator.next_deadline_us()
        return Outcome(firings, deadlines, self._applied_seq, 0, missing).pack()

    def explain(self, automation_id: str) -> dict[str, Any] | None:
        """The automation's buckets and deadline as JSON-safe data, or None."""
        evaluator = self._evaluators.get(automation_id)
        if evaluator is None:
            return None
        return evaluator.explain().model_dump(mode="json")

    def snapshot(self) -> dict[str, Any]:
        """Every hosted automation's state plus the last sequence number applied."""
        return {
            "applied_seq": self._applied_seq,
            "automations": {a: e.snapshot() for a, e in self._evaluators.items()},
        }
