"""StartupProgress: the phases a daemon goes through and the automations it recovered."""

from __future__ import annotations

from marmot.actors.startup import StartupPhase, StartupProgress


def test_progress_describes_each_phase() -> None:
    progress = StartupProgress(started_at=10.0)
    assert progress.describe() == "opening the store" and not progress.is_serving
    progress.enter(StartupPhase.STARTING_RAY)
    assert progress.describe() == "starting Ray"
    progress.begin_recovery(2)
    assert progress.describe() == "recovering automations (0 of 2)"
    progress.recovered_one()
    assert progress.describe() == "recovering automations (1 of 2)"
    assert progress.automations_remaining == 1
    progress.enter(StartupPhase.SERVING)
    assert progress.is_serving and progress.describe() == "serving"


def test_elapsed_time_is_measured_from_the_start_on_the_callers_clock() -> None:
    progress = StartupProgress(started_at=10.0)
    assert progress.elapsed_s(12.5) == 2.5
    assert progress.elapsed_s(9.0) == 0.0  # a clock read before the start is not negative
