"""The router without Ray: what it has sent each actor, so checkpoints there are safe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from marmot.actors.router import Router
from marmot.actors.runtime import AutomationRef
from marmot.actors.store import Store
from marmot.actors.wire import Batch, Outcome
from marmot.config import RouterConfig
from marmot.engine.clock import ManualClock
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.timestamps import from_us
from marmot.engine.triggers.evaluator import Evaluator
from tests.engine.factories import event

AUTOMATION = Automation.model_validate(
    {
        "id": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
        "name": "router-test",
        "trigger": {"expect": ["job.*"], "threshold": 100, "within": 60},
    }
)
AID = str(AUTOMATION.id)


class HeldActor:
    """Answers each ``apply`` call only when the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.events: list[Event] = []
        self.pending: list[asyncio.Future[bytes]] = []
        self.apply = self

    def remote(self, blob: bytes) -> asyncio.Future[bytes]:
        rows = Batch.unpack(blob)
        self.batches.append([seq for seq, _, _ in rows])
        self.events.extend(e for _, _, e in rows)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending.append(answer)
        return answer

    def release_all(self) -> None:
        for answer in self.pending:
            if not answer.done():
                answer.set_result(Outcome([], {}, 0, 0).pack())


def received(e: Event) -> Event:
    return e.model_copy(update={"received": e.occurred})


@contextlib.asynccontextmanager
async def routed_to_held_actor(
    tmp_path: Path, settings: RouterConfig
) -> AsyncIterator[tuple[Router, HeldActor]]:
    """A router over a store in ``tmp_path`` sending the test automation's events
    to a ``HeldActor``; both closed afterwards."""

    async def on_outcome(outcome: Outcome) -> None:
        return None

    store = Store.open(tmp_path / "marmot.db")
    router = Router(store.events, settings, on_outcome, ManualClock(from_us(10_000_000)))
    actor = HeldActor()
    router.add_actor("a", AutomationRef(actor))
    router.route(AID, "a", [leaf.matcher for leaf in Evaluator(AUTOMATION).leaves])
    try:
        yield router, actor
    finally:
        await router.close()
        store.close()


def test_sent_upto_stops_before_what_waits_in_the_lane_or_is_held_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with routed_to_held_actor(
            tmp_path, RouterConfig(batch_max_events=2, max_inflight_per_actor=1)
        ) as (router, actor):
            seqs = await router.submit([received(event("job.ran", n)) for n in range(5)])
            await asyncio.sleep(0)
            # One call in flight (the first two), three events wait in the lane.
            assert actor.batches == [seqs[:2]]
            assert router.sent_upto("a") == seqs[2] - 1
            assert router.sent_upto("elsewhere") == seqs[-1]

            # A follower whose leader has not arrived is held back: nothing past it is safe.
            follower = received(
                event("job.followed", 9, follows="5b5b5b5b-0000-4000-8000-000000000000")
            )
            (held,) = await router.submit([follower])
            unrelated = await router.submit([received(event("other.thing", 10))])
            assert router.sent_upto("elsewhere") == held - 1

            while router.queued:
                actor.release_all()
                await asyncio.sleep(0)
            assert [seq for batch in actor.batches for seq in batch] == seqs
            assert router.sent_upto("a") == held - 1
            assert unrelated[0] > held

    asyncio.run(main())


def test_a_held_follower_reaches_the_actor_after_its_leader_with_its_seq_negated(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with routed_to_held_actor(tmp_path, RouterConfig()) as (router, actor):
            leader = received(event("job.started", 1))
            follower = received(event("job.finished", 2, follows=leader.id, labels={"n": "7"}))

            (follower_seq,) = await router.submit([follower])
            await asyncio.sleep(0)
            assert actor.batches == []  # held until its leader is processed
            (leader_seq,) = await router.submit([leader])
            while router.queued or (actor.pending and not actor.pending[-1].done()):
                actor.release_all()
                await asyncio.sleep(0)

            # Negated: behind what the actor saw since, never taken for a replayed row.
            assert [seq for batch in actor.batches for seq in batch] == [leader_seq, -follower_seq]
            assert actor.events == [leader, follower]
            assert router.sent_upto("a") == leader_seq

    asyncio.run(main())


def test_submits_waiting_on_backpressure_are_logged_in_the_order_they_were_made(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        settings = RouterConfig(batch_max_events=1, max_inflight_per_actor=1, max_queued_events=2)
        async with routed_to_held_actor(tmp_path, settings) as (router, actor):
            first = await router.submit([received(event("job.ran", n)) for n in range(4)])
            await asyncio.sleep(0)
            assert router.queued >= 2  # the actor holds the lane: the next submits must wait
            names = [f"job.batch{k}" for k in range(5)]
            tasks = [
                asyncio.get_running_loop().create_task(
                    router.submit([received(event(name, 10 + k))])
                )
                for k, name in enumerate(names)
            ]
            await asyncio.sleep(0.01)
            assert not any(t.done() for t in tasks)
            while not all(t.done() for t in tasks):
                actor.release_all()
                await asyncio.sleep(0)
            seqs = [(await t)[0] for t in tasks]
            assert seqs == sorted(seqs) and seqs[0] > first[-1]
            assert router.stats.backpressure_waits >= 1

    asyncio.run(main())


def test_a_redelivered_event_is_dropped_without_holding_anything_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with routed_to_held_actor(tmp_path, RouterConfig()) as (router, actor):
            first = received(event("job.ran", 1))
            (seq,) = await router.submit([first])
            while router.queued or (actor.pending and not actor.pending[-1].done()):
                actor.release_all()
                await asyncio.sleep(0)
            offset = router.offset_us()
            # The same id again, later: the log keeps the first row, the router
            # drops it before the events clock or the actor sees it.
            again = first.model_copy(update={"received": first.occurred})
            assert await router.submit([again]) == [seq]
            await asyncio.sleep(0)
            assert [s for batch in actor.batches for s in batch] == [seq]
            assert router.offset_us() == offset
            assert router.causal.duplicates == 1
            # Nothing is held back for it: checkpoints may move past it.
            assert router.sent_upto("a") == seq

    asyncio.run(main())


def test_events_far_behind_do_not_hold_the_events_clock_back_and_are_counted(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        settings = RouterConfig(events_clock_max_lag_s=60)
        async with routed_to_held_actor(tmp_path, settings) as (router, _):
            # The router's clock stands at 10 s (after the epoch); events from an
            # hour before it arrive.
            old = [
                event("job.ran", t).model_copy(
                    update={
                        "occurred": from_us((t - 3600) * 1_000_000),
                        "received": from_us(10_000_000),
                    }
                )
                for t in range(5)
            ]
            await router.submit(old)
            assert router.offset_us() == -60_000_000  # not -3,600 s
            assert router._metrics.events_behind._value.get() == 5

    asyncio.run(main())


def test_a_follower_held_when_the_daemon_stops_is_held_again_after_a_restart(
    tmp_path: Path,
) -> None:
    async def on_outcome(outcome: Outcome) -> None:
        return None

    async def main() -> None:
        store = Store.open(tmp_path / "marmot.db")
        leader = received(event("job.started", 1))
        follower = received(event("job.finished", 2, follows=leader.id))
        clock = ManualClock(from_us(10_000_000))
        first = Router(store.events, RouterConfig(), on_outcome, clock, followers=store.followers)
        (follower_seq,) = await first.submit([follower])
        await first.close()  # the daemon stops with the follower held

        again = Router(store.events, RouterConfig(), on_outcome, clock, followers=store.followers)
        actor = HeldActor()
        again.add_actor("a", AutomationRef(actor))
        again.route(AID, "a", [leaf.matcher for leaf in Evaluator(AUTOMATION).leaves])
        assert again.restore_held() == [follower_seq]
        assert again.causal.waiting == 1
        await again.submit([leader])
        while again.queued or (actor.pending and not actor.pending[-1].done()):
            actor.release_all()
            await asyncio.sleep(0)
        assert [e.id for e in actor.events] == [leader.id, follower.id]
        assert store.followers.all() == []  # released: not held a third time
        await again.close()
        store.close()

    asyncio.run(main())
