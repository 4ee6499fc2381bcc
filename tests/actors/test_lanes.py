"""Lanes without Ray: batching, order, and what happens to a batch whose call fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from marmot.actors import lanes
from marmot.actors.lanes import Lane


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "REDO_DELAY_S", 0.0)


class Actor:
    """Records each call's batch; fails the calls it is told to."""

    def __init__(self, fail_calls: set[int] | None = None, fail_always: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.fail_calls = fail_calls or set()
        self.fail_always = fail_always

    def call(self, handle: Any, batch: list[int]) -> Any:
        self.calls.append(list(batch))
        number = len(self.calls)

        async def answer() -> list[int]:
            await asyncio.sleep(0)
            if self.fail_always or number in self.fail_calls:
                raise ConnectionError(f"call {number} failed")
            return batch

        return answer()


def run_lane(actor: Actor, redo: bool, items: list[list[int]], **options: Any) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        applied: list[int] = []
        failures: list[str] = []

        async def on_result(lane: Lane[Any], batch: list[int], result: Any) -> None:
            applied.extend(result)

        def on_failure(lane: Lane[Any], batch: list[int], exc: BaseException) -> bool:
            failures.append(str(exc))
            return redo

        lane: Lane[int] = Lane(
            None,
            actor.call,
            on_result,
            on_failure,
            batch_max=options.get("batch_max", 2),
            max_inflight=options.get("max_inflight", 1),
        )
        for chunk in items:
            lane.put(chunk)
            await asyncio.sleep(0)
        await asyncio.wait_for(lane.settled(), 10)
        await lane.close()
        return {"applied": applied, "failures": failures, "dropped": lane.dropped}

    return asyncio.run(main())


def test_items_arrive_in_order_in_bounded_batches() -> None:
    actor = Actor()
    got = run_lane(actor, redo=False, items=[[1, 2, 3, 4, 5]])
    assert got["applied"] == [1, 2, 3, 4, 5]
    assert all(len(call) <= 2 for call in actor.calls)


def test_a_failed_batch_is_sent_again_before_anything_queued_after_it() -> None:
    actor = Actor(fail_calls={1, 2})
    got = run_lane(actor, redo=True, items=[[1, 2], [3], [4, 5]])
    assert got["applied"] == [1, 2, 3, 4, 5]
    assert len(got["failures"]) == 2
    assert actor.calls[:3] == [[1, 2], [1, 2], [1, 2]]


def test_order_holds_when_several_calls_in_flight_fail() -> None:
    actor = Actor(fail_calls={1, 2})
    got = run_lane(actor, redo=True, items=[[1, 2, 3, 4, 5, 6]], max_inflight=2)
    assert got["applied"] == [1, 2, 3, 4, 5, 6]


def test_a_batch_the_handler_gives_up_on_is_dropped_and_the_lane_goes_on() -> None:
    actor = Actor(fail_calls={1})
    got = run_lane(actor, redo=False, items=[[1, 2], [3]])
    assert got["applied"] == [3]
    assert got["dropped"] == 0  # the handler took it over


def test_redoing_is_bounded() -> None:
    actor = Actor(fail_always=True)
    got = run_lane(actor, redo=True, items=[[1]], batch_max=1)
    assert got["applied"] == []
    assert len(got["failures"]) == lanes.MAX_REDOS + 1
    assert got["dropped"] == 1


def test_first_idle_prefers_the_first_lane_with_nothing_in_flight() -> None:
    async def main() -> list[int]:
        held = asyncio.Event()

        def call(handle: Any, batch: list[int]) -> Any:
            async def answer() -> list[int]:
                await held.wait()
                return batch

            return answer()

        async def ignore(lane: Lane[Any], batch: list[int], result: Any) -> None:
            return None

        lanes_ = [
            Lane(n, call, ignore, lambda *_: False, batch_max=10, max_inflight=1) for n in range(3)
        ]
        chosen = []
        chosen.append(lanes.first_idle(lanes_).handle)  # all idle: the first
        lanes_[0].put([1])
        await asyncio.sleep(0)  # the first lane's call is now in flight
        chosen.append(lanes.first_idle(lanes_).handle)  # the second
        lanes_[1].put([2])
        lanes_[2].put([3])
        await asyncio.sleep(0)
        lanes_[0].put([4, 5])  # queued behind the call in flight
        lanes_[2].put([6])
        chosen.append(lanes.first_idle(lanes_).handle)  # all busy: the least queued
        held.set()
        for lane in lanes_:
            await lane.settled()
        chosen.append(lanes.first_idle(lanes_).handle)  # idle again: the first
        for lane in lanes_:
            await lane.close()
        return chosen

    assert asyncio.run(main()) == [0, 1, 1, 0]


def test_a_lone_item_goes_at_once_and_what_queues_behind_a_call_goes_in_the_next() -> None:
    """No linger (issue 22): a lone firing is sent on the lane's first turn, and the
    firings that come while that call is in flight go together in the next one."""

    async def main() -> tuple[list[list[int]], list[list[int]], list[int], bool]:
        release = asyncio.Event()
        calls: list[list[int]] = []
        applied: list[int] = []

        def call(handle: Any, batch: list[int]) -> Any:
            calls.append(list(batch))

            async def answer() -> list[int]:
                await release.wait()
                return batch

            return answer()

        async def on_result(lane: Lane[Any], batch: list[int], result: Any) -> None:
            applied.extend(result)

        lane: Lane[int] = Lane(
            None, call, on_result, lambda *_: False, batch_max=200, max_inflight=1
        )
        other: Lane[int] = Lane(
            None, call, on_result, lambda *_: False, batch_max=200, max_inflight=1
        )
        lane.put([1])
        await asyncio.sleep(0)  # the lane's first turn
        first = [list(c) for c in calls]
        lane.put([2])
        lane.put([3, 4])
        await asyncio.sleep(0)
        # A call in flight: the next items wait for it, and the other lane is idle.
        is_other_idle = lanes.first_idle([lane, other]) is other
        held = [list(c) for c in calls]
        release.set()
        await asyncio.wait_for(lane.settled(), 10)
        await lane.close()
        await other.close()
        return first, held + calls[len(held) :], applied, is_other_idle

    first, calls, applied, is_other_idle = asyncio.run(main())
    assert first == [[1]]
    assert calls == [[1], [2, 3, 4]]
    assert applied == [1, 2, 3, 4]
    assert is_other_idle
