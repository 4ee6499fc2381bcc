"""The loop guard: firings caused by automation events, counted per automation."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from marmot.actors.loops import LoopGuard
from marmot.engine.models.events import Event
from marmot.engine.triggers.firing import Firing

AUTOMATION = UUID("00000000-0000-4000-8000-0000000000aa")


def _firing(on: str) -> Firing:
    event = Event.model_validate(
        {
            "occurred": datetime(2026, 3, 1, tzinfo=UTC),
            "event": on,
            "resource": {"prefect.resource.id": "r"},
        }
    )
    return Firing(uuid4(), AUTOMATION, "trigger", {}, event, 0)


def test_firings_on_automation_events_past_the_limit_within_the_window_are_a_loop() -> None:
    guard = LoopGuard(max_firings=3, window_us=10_000_000)
    looped = [guard.is_looping(_firing("prefect.automation.triggered"), t) for t in range(4)]
    assert looped == [False, False, False, True]


def test_other_firings_and_old_ones_do_not_count() -> None:
    guard = LoopGuard(max_firings=3, window_us=10_000_000)
    assert not any(guard.is_looping(_firing("job.failed"), t) for t in range(100))
    # Three in a window, then the next window: never more than three at once.
    times = [0, 1, 2, 10_000_001, 10_000_002, 10_000_003]
    assert not any(
        guard.is_looping(_firing("prefect.automation.action.executed"), t) for t in times
    )
