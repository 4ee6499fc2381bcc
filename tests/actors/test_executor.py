"""The executor's contract, without Ray: claims, retries, time-outs, outcome events."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from marmot.actors.action_runs import (
    ActionFailed,
    ActionResult,
    ActionRun,
    RegistryRequest,
    Runner,
    RunnerSet,
    TransientFailure,
)
from marmot.actors.executor import ExecutorHost, ExecutorResults, backoff_delay
from marmot.actors.store import Store
from marmot.actors.wire import event_to_wire, firing_to_wire, pack, unpack
from marmot.config import ExecutorsConfig, MarmotConfig
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.triggers.firing import Firing, TriggerState, firing_id, triggered_event
from tests.engine.factories import event

AUTOMATION_ID = UUID("8b0f9d1e-2c3a-4b5d-9e6f-7a8b9c0d1e2f")


def automation(*action_types: str, on_trigger: tuple[str, ...] = ()) -> Automation:
    return Automation.model_validate(
        {
            "id": str(AUTOMATION_ID),
            "name": "executor-test",
            "trigger": {"expect": ["x.happened"], "threshold": 1, "within": 0},
            "actions": [{"type": t} for t in action_types],
            "actions_on_trigger": [{"type": t} for t in on_trigger],
        }
    )


def job_blob(a: Automation, n: int = 0) -> bytes:
    trigger_event = event("x.happened", n, resource_id="prefect.flow-run.1")
    firing = Firing(
        id=firing_id(a.id, n),
        automation_id=a.id,
        trigger_path="",
        labels={},
        triggering_event=trigger_event,
        fired_us=1_000_000 + n,
    )
    triggered = triggered_event(a, firing)
    return pack(
        [
            {str(a.id): a.model_dump_json()},
            [[str(a.id), firing_to_wire(firing), event_to_wire(triggered)]],
        ]
    )


class Scripted:
    """Runners whose behaviour each test scripts; counts calls, records delays."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.events_seen: list[str] = []
        self.behaviour: dict[str, Callable[[ActionRun], Awaitable[ActionResult]]] = {}
        self.closed = False

    def runner(self, action_type: str) -> Runner:
        async def run(run: ActionRun) -> ActionResult:
            self.calls[action_type] = self.calls.get(action_type, 0) + 1
            self.events_seen.append(run.event.event if run.event else "-")
            return await self.behaviour[action_type](run)

        return run

    async def factory(self, config: MarmotConfig, store: Any) -> RunnerSet:
        async def close() -> None:
            self.closed = True

        return RunnerSet({t: self.runner(t) for t in self.behaviour}, close)


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        scripted: Scripted,
        name: str = "executor-0",
        store: Store | None = None,
        **settings: Any,
    ) -> None:
        self.delays: list[float] = []
        self.store = store or Store.open(tmp_path / "marmot.db")

        async def fake_sleep(seconds: float) -> None:
            self.delays.append(seconds)

        self.host = ExecutorHost(
            lambda: self.store,
            MarmotConfig.model_validate({"executors": {"max_retries": 3, **settings}}),
            scripted.factory,
            name,
            sleep=fake_sleep,
            seed=7,
        )
        self._stream: AsyncIterator[bytes] | None = None

    async def execute(self, blob: bytes) -> list[str]:
        started = unpack(await self.host.execute(blob))
        # Each started action's action.triggered event comes out of the results.
        return ["prefect.automation.action.triggered"] * started

    async def next_results(self) -> ExecutorResults:
        if self._stream is None:
            self._stream = self.host.results()
        return ExecutorResults.unpack(await asyncio.wait_for(anext(self._stream), 10))

    async def outcomes(self, n: int) -> list[ExecutorResults]:
        """Results until ``n`` outcomes (not announcements) have come."""
        got: list[ExecutorResults] = []
        while sum(1 for r in got for e in r.events if not _announced(e)) < n:
            got.append(await self.next_results())
        return got


def _announced(e: Event) -> bool:
    return e.event == "prefect.automation.action.triggered"


def statuses(results: list[ExecutorResults]) -> dict[int, tuple[str, dict[str, Any]]]:
    return {
        e.payload["action_index"]: (e.event.rsplit(".", 1)[-1], dict(e.payload))
        for r in results
        for e in r.events
        if not _announced(e)
    }


async def succeed(run: ActionRun) -> ActionResult:
    return ActionResult("ok")


def test_actions_run_once_and_report_triggered_then_executed(tmp_path: Path) -> None:
    async def main() -> None:
        scripted = Scripted()
        scripted.behaviour["call-webhook"] = succeed
        h = Harness(tmp_path, scripted)
        a = Automation.model_validate(
            {
                **automation().model_dump(mode="json"),
                "actions": [
                    {"type": "do-nothing"},
                    {
                        "type": "call-webhook",
                        "block_document_id": "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
                    },
                ],
            }
        )
        blob = job_blob(a)
        assert await h.execute(blob) == ["prefect.automation.action.triggered"] * 2
        results = await h.outcomes(2)
        done = statuses(results)
        assert done[0][0] == "executed" and done[0][1]["result"] == "did nothing, as asked"
        assert done[1][0] == "executed" and done[1][1]["attempts"] == 1
        for e in (e for r in results for e in r.events):
            # Built without validation: exactly what validation accepts.
            assert Event.model_validate(e.model_dump()) == e
            assert e.occurred.tzinfo is UTC
        # The same firing again (a retry of the call, a replay): nothing acts twice.
        assert await h.execute(blob) == []
        assert scripted.calls == {"call-webhook": 1}
        records = {r.key.rsplit(":", 1)[1]: r.status for r in h.store.actions.read()}
        assert records == {"0": "executed", "1": "executed"}
        await h.host.close()
        assert scripted.closed

    asyncio.run(main())


def test_transient_failures_retry_with_backoff_then_succeed(tmp_path: Path) -> None:
    async def main() -> None:
        scripted = Scripted()
        failures = iter([TransientFailure("503 from server"), TransientFailure("again")])

        async def flaky(run: ActionRun) -> ActionResult:
            failure = next(failures, None)
            if failure is not None:
                raise failure
            return ActionResult(f"worked on attempt {run.attempt}")

        scripted.behaviour["cancel-flow-run"] = flaky
        h = Harness(tmp_path, scripted, backoff_base_s=1.0, backoff_max_s=60.0)
        await h.execute(job_blob(automation("cancel-flow-run")))
        status, payload = statuses(await h.outcomes(1))[0]
        assert status == "executed"
        assert payload["result"] == "worked on attempt 3"
        assert payload["attempts"] == 3
        assert scripted.calls == {"cancel-flow-run": 3}
        # Doubling with jitter in the upper half: [0.5, 1], then [1, 2].
        assert len(h.delays) == 2
        assert 0.5 <= h.delays[0] <= 1.0 and 1.0 <= h.delays[1] <= 2.0

    asyncio.run(main())


def test_retry_after_is_honoured_within_the_cap(tmp_path: Path) -> None:
    async def main() -> None:
        scripted = Scripted()
        calls = iter([TransientFailure("429", retry_after_s=7.0)])

        async def limited(run: ActionRun) -> ActionResult:
            failure = next(calls, None)
            if failure:
                raise failure
            return ActionResult("ok")

        scripted.behaviour["cancel-flow-run"] = limited
        h = Harness(tmp_path, scripted, backoff_base_s=0.1, backoff_max_s=10.0)
        await h.execute(job_blob(automation("cancel-flow-run")))
        assert statuses(await h.outcomes(1))[0][0] == "executed"
        assert h.delays == [7.0]

    asyncio.run(main())


def test_permanent_failure_does_not_retry_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        scripted = Scripted()

        async def refused(run: ActionRun) -> ActionResult:
            raise ActionFailed("400 Bad Request: no such deployment")

        scripted.behaviour["run-deployment"] = refused
        h = Harness(tmp_path, scripted)
        a = Automation.model_validate(
            {
                **automation().model_dump(mode="json"),
                "actions": [
                    {
                        "type": "run-deployment",
                        "deployment_id": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
                    }
                ],
            }
        )
        await h.execute(job_blob(a))
        status, payload = statuses(await h.outcomes(1))[0]
        assert (status, payload["reason"]) == ("failed", "400 Bad Request: no such deployment")
        assert scripted.calls == {"run-deployment": 1}
        assert h.delays == []
        (record,) = h.store.actions.read()
        assert (record.status, record.detail) == ("failed", "400 Bad Request: no such deployment")

    with caplog.at_level(logging.WARNING, logger="marmot.actors.executor"):
        asyncio.run(main())
    # The daemon's log names the automation and the reason (issue 17 #10).
    [line] = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert line == (
        f"action 0 (run-deployment) of automation {automation().name!r} failed: "
        "400 Bad Request: no such deployment"
    )


def test_gives_up_after_max_retries(tmp_path: Path) -> None:
    async def main() -> None:
        scripted = Scripted()

        async def down(run: ActionRun) -> ActionResult:
            raise TransientFailure("connection refused")

        scripted.behaviour["cancel-flow-run"] = down
        h = Harness(tmp_path, scripted, max_retries=2)
        await h.execute(job_blob(automation("cancel-flow-run")))
        status, payload = statuses(await h.outcomes(1))[0]
        assert status == "failed"
        assert payload["reason"] == "connection refused (gave up after 3 attempts)"
        assert scripted.calls == {"cancel-flow-run": 3}

    asyncio.run(main())


def test_an_attempt_that_hangs_times_out_and_is_retried(tmp_path: Path) -> None:
    async def main() -> None:
        scripted = Scripted()
        hang = asyncio.Event()  # never set

        async def stuck_once(run: ActionRun) -> ActionResult:
            if run.attempt == 1:
                await hang.wait()
            return ActionResult("second attempt went through")

        scripted.behaviour["cancel-flow-run"] = stuck_once
        h = Harness(tmp_path, scripted, action_timeout_s=0.05)
        await h.execute(job_blob(automation("cancel-flow-run")))
        status, payload = statuses(await h.outcomes(1))[0]
        assert status == "executed" and payload["attempts"] == 2

    asyncio.run(main())


def test_a_crashing_runner_fails_the_action_not_the_executor(tmp_path: Path) -> None:
    async def main() -> None:
        scripted = Scripted()

        async def buggy(run: ActionRun) -> ActionResult:
            raise KeyError("oops")

        scripted.behaviour["cancel-flow-run"] = buggy
        h = Harness(tmp_path, scripted)
        await h.execute(job_blob(automation("cancel-flow-run", "do-nothing")))
        done = statuses(await h.outcomes(2))
        assert done[0][0] == "failed" and done[0][1]["reason"] == "KeyError: 'oops'"
        assert done[1][0] == "executed"

    asyncio.run(main())


def test_action_types_without_a_runner_fail_with_the_reason(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, Scripted())
        await h.execute(job_blob(automation("cancel-flow-run")))
        status, payload = statuses(await h.outcomes(1))[0]
        assert status == "failed"
        assert "cannot run" in payload["reason"]

    asyncio.run(main())


def test_actions_on_trigger_see_the_triggered_event_and_registry_requests_come_out(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        scripted = Scripted()

        async def pause(run: ActionRun) -> ActionResult:
            return ActionResult("paused", registry=RegistryRequest("pause", str(AUTOMATION_ID)))

        scripted.behaviour["pause-automation"] = pause
        h = Harness(tmp_path, scripted)
        a = Automation.model_validate(
            {
                **automation().model_dump(mode="json"),
                "actions_on_trigger": [{"type": "pause-automation", "source": "inferred"}],
            }
        )
        await h.execute(job_blob(a))
        results = await h.outcomes(1)
        assert scripted.events_seen == ["prefect.automation.triggered"]
        assert [r for chunk in results for r in chunk.registry] == [
            RegistryRequest("pause", str(AUTOMATION_ID))
        ]

    asyncio.run(main())


def test_a_resolved_firing_runs_actions_on_resolve_with_the_resolved_event(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        scripted = Scripted()
        scripted.behaviour["do-nothing"] = succeed
        scripted.behaviour["resume-automation"] = succeed
        h = Harness(tmp_path, scripted)
        a = Automation.model_validate(
            {
                **automation("do-nothing").model_dump(mode="json"),
                "actions_on_resolve": [{"type": "resume-automation", "source": "inferred"}],
            }
        )
        source = event("x.happened", 5, resource_id="prefect.flow-run.1")
        resolved = Firing(
            id=firing_id(a.id, "resolved"),
            automation_id=a.id,
            trigger_path="trigger",
            labels={},
            triggering_event=source,
            fired_us=2_000_000,
            state=TriggerState.Resolved,
        )
        announced = triggered_event(a, resolved)
        blob = pack(
            [
                {str(a.id): a.model_dump_json()},
                [[str(a.id), firing_to_wire(resolved), event_to_wire(announced)]],
            ]
        )
        assert await h.execute(blob) == ["prefect.automation.action.triggered"]
        results = await h.outcomes(1)
        # Only actions_on_resolve ran (not `actions`), templated with the
        # automation.resolved event.
        assert scripted.calls == {"resume-automation": 1}
        assert scripted.events_seen == ["prefect.automation.resolved"]
        assert statuses(results)[0][0] == "executed"

    asyncio.run(main())


@dataclass
class Hanging:
    scripted: Scripted
    release: asyncio.Event


def hanging_runner(action_type: str) -> Hanging:
    """A runner that does not finish until released: its executor "dies" mid-action."""
    release = asyncio.Event()

    async def hang(run: ActionRun) -> ActionResult:
        await release.wait()
        return ActionResult("released")

    scripted = Scripted()
    scripted.behaviour[action_type] = hang
    return Hanging(scripted, release)


def test_an_action_its_dead_incarnation_claimed_is_adopted_by_the_next_one(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        hanging = hanging_runner("call-webhook")
        dead = Harness(tmp_path, hanging.scripted, action_timeout_s=3600)
        a = Automation.model_validate(
            {
                **automation().model_dump(mode="json"),
                "actions": [
                    {"type": "call-webhook", "block_document_id": str(AUTOMATION_ID)},
                ],
            }
        )
        assert await dead.execute(job_blob(a)) == ["prefect.automation.action.triggered"]
        await asyncio.sleep(0)  # the action is under way when its executor "dies"

        second = Scripted()
        second.behaviour["call-webhook"] = succeed
        other_name = Harness(tmp_path, second, name="executor-1", store=dead.store)
        assert await other_name.host.adopt() == 0  # not its claims
        heir = Harness(tmp_path, second, store=dead.store)
        assert await heir.host.adopt() == 1
        assert await heir.host.adopt() == 0  # its own now
        done = statuses(await heir.outcomes(1))
        assert done[0][0] == "executed"
        assert second.calls == {"call-webhook": 1}
        assert [r.status for r in heir.store.actions.read()] == ["executed"]
        # Redelivering the firing still acts once.
        assert await heir.execute(job_blob(a)) == []
        hanging.release.set()

    asyncio.run(main())


def test_claims_left_by_the_last_run_are_spread_over_the_new_pool(tmp_path: Path) -> None:
    async def main() -> None:
        hanging = hanging_runner("do-nothing")
        dead = Harness(tmp_path, hanging.scripted, name="executor-5", action_timeout_s=3600)
        for n in range(6):
            await dead.execute(job_blob(automation("do-nothing"), n))
        # The daemon restarts with a pool of two: executor-5 is no more.
        assert dead.store.actions.orphan_claims(["executor-0", "executor-1"]) == 6
        shares = []
        for name in ("executor-0", "executor-1"):
            h = Harness(tmp_path, Scripted(), name=name, store=dead.store)
            shares.append((h, await h.host.adopt()))
        assert sorted(n for _, n in shares) == [3, 3]
        for h, n in shares:
            await h.outcomes(n)
        assert {r.status for r in dead.store.actions.read()} == {"executed"}
        hanging.release.set()

    asyncio.run(main())


def test_backoff_is_capped() -> None:
    settings = ExecutorsConfig(backoff_base_s=1.0, backoff_max_s=5.0)
    rng = random.Random(1)
    delays = [backoff_delay(attempt, settings, rng) for attempt in range(1, 10)]
    assert all(d <= 5.0 for d in delays)
    assert all(d >= 2.5 for d in delays[3:])


def test_results_round_trip() -> None:
    chunk = ExecutorResults([event("a", 1)], [RegistryRequest("resume", "x")])
    again = ExecutorResults.unpack(chunk.pack())
    assert again.registry == chunk.registry
    assert [e.id for e in again.events] == [e.id for e in chunk.events]


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_backoff_grows(attempt: int) -> None:
    settings = ExecutorsConfig(backoff_base_s=1.0, backoff_max_s=100.0)
    delay = backoff_delay(attempt, settings, random.Random(attempt))
    assert 2 ** (attempt - 1) * 0.5 <= delay <= 2 ** (attempt - 1)


def test_each_actions_triggered_event_comes_out_ahead_of_its_outcome(tmp_path: Path) -> None:
    async def main() -> None:
        scripted = Scripted()
        h = Harness(tmp_path, scripted)
        await h.execute(job_blob(automation("do-nothing", "do-nothing")))
        names: list[tuple[str, int]] = []
        while len(names) < 4:
            for e in (await h.next_results()).events:
                names.append((e.event.rsplit(".", 1)[-1], e.payload["action_index"]))
        for index in (0, 1):
            assert names.index(("triggered", index)) < names.index(("executed", index))

    asyncio.run(main())


def test_an_executed_action_relates_what_it_acted_on_and_carries_its_details(
    tmp_path: Path,
) -> None:
    """As Prefect's action events: the block (and its type) a webhook call used, the
    deployment acted on as the target, the flow run started, and the runner's
    details (a webhook's status_code) in the payload."""
    block = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    deployment = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    run_id = "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a"

    async def called(run: ActionRun) -> ActionResult:
        return ActionResult(
            "called",
            extra={
                "block_document_id": block,
                "block_name": "hook",
                "block_type_slug": "webhook",
                "status_code": 204,
            },
        )

    async def ran(run: ActionRun) -> ActionResult:
        return ActionResult("ran", extra={"deployment_id": deployment, "flow_run_id": run_id})

    async def main() -> None:
        scripted = Scripted()
        scripted.behaviour["call-webhook"] = called
        scripted.behaviour["run-deployment"] = ran
        h = Harness(tmp_path, scripted)
        a = Automation.model_validate(
            {
                **automation().model_dump(mode="json"),
                "actions": [
                    {"type": "call-webhook", "block_document_id": block},
                    {"type": "run-deployment", "deployment_id": deployment},
                ],
            }
        )
        await h.execute(job_blob(a))
        results = await h.outcomes(2)
        executed = {
            e.payload["action_type"]: e
            for r in results
            for e in r.events
            if e.event == "prefect.automation.action.executed"
        }
        webhook, deployment_run = executed["call-webhook"], executed["run-deployment"]
        assert webhook.payload["status_code"] == 204
        roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in webhook.related}
        assert roles["block"] == f"prefect.block-document.{block}"
        assert roles["block-type"] == "prefect.block-type.webhook"
        assert "automation-triggered-event" in roles and "triggering-event" in roles
        roles = {
            r["prefect.resource.role"]: r["prefect.resource.id"] for r in deployment_run.related
        }
        assert roles["target"] == f"prefect.deployment.{deployment}"
        assert roles["flow-run"] == f"prefect.flow-run.{run_id}"

    asyncio.run(main())
