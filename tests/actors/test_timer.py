"""The timer actor's body without Ray: deadlines on the events clock."""

from __future__ import annotations

import asyncio

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.timer import TimerHost

HOUR_US = 3_600_000_000


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_offset_that_comes_with_a_schedule_is_used_at_once() -> None:
    async def main() -> list[tuple[str, int, int]]:
        timer = TimerHost()
        stream = timer.stream()
        # Events run an hour behind the wall clock: a deadline an hour ahead of
        # the events clock is at the wall clock's "now" + 1 h.
        await timer.schedule({"late-events": SYSTEM_CLOCK.now_us()}, -HOUR_US)
        await _settle()
        assert timer._due.empty()  # with no offset it would have been due at once
        assert await timer.pending() == 1
        # The offset alone (no deadline) moves it: now the deadline has passed.
        await timer.schedule({}, 0)
        due = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()
        return due

    due = asyncio.run(main())
    assert [key for key, _, _ in due] == ["late-events"]


def test_a_schedule_without_an_offset_keeps_the_last_one() -> None:
    async def main() -> int:
        timer = TimerHost()
        await timer.set_offset(-HOUR_US)
        await timer.schedule({"k": SYSTEM_CLOCK.now_us() - HOUR_US // 2})
        await _settle()
        assert timer._due.empty()  # half an hour away on the wall clock
        return await timer.pending()

    assert asyncio.run(main()) == 1


def test_a_deadline_already_past_when_set_is_not_counted_late() -> None:
    # An event from March puts a deadline months in the past: it fires at once,
    # and the lateness is the timer's, not the publisher's clock's.
    async def main() -> list[tuple[str, int, int]]:
        timer = TimerHost()
        stream = timer.stream()
        await timer.schedule({"march": SYSTEM_CLOCK.now_us() - 280 * 24 * HOUR_US}, 0)
        due = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()
        return due

    [(key, _, lateness)] = asyncio.run(main())
    assert key == "march"
    assert 0 <= lateness < 5_000_000  # microseconds: well under 5 s, not 280 days
