"""LogThrottle: one line per key per interval, counting the lines left out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from marmot.actors.throttle import LogThrottle
from marmot.engine.clock import ManualClock


def test_one_line_per_key_per_interval_with_the_count_left_out() -> None:
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    throttle = LogThrottle(5.0, clock=clock)
    assert throttle.admit("bad_json") == 0  # the first line goes out
    assert throttle.admit("bad_json") is None
    assert throttle.admit("too_big") == 0  # keys are throttled apart
    clock.advance(timedelta(seconds=4.9))
    assert throttle.admit("bad_json") is None
    clock.advance(timedelta(seconds=0.1))
    assert throttle.admit("bad_json") == 2  # two left out since the last line
    assert throttle.admit("bad_json") is None
