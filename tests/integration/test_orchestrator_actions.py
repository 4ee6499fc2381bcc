"""The orchestrator actions against a real Prefect server on 127.0.0.1: each runner
called with an ``ActionRun``, its effect read back from Prefect's REST API."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jinja2
import pytest

from marmot.actors.action_runs import (
    ActionFailed,
    ActionRun,
    Runner,
    TransientFailure,
)
from marmot.config import MarmotConfig
from marmot.engine.clock import ManualClock
from marmot.engine.errors import NotFound
from marmot.engine.models.actions import parse_action
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.timestamps import rfc3339
from marmot.engine.triggers.firing import Firing
from marmot.transport.actions.orchestration import (
    ORCHESTRATION_ACTION_TYPES,
    ParameterRenderer,
    orchestration_runners,
)
from marmot.transport.orchestrator import (
    OrchestrationRefused,
    OrchestratorClient,
    OrchestratorNotFound,
)
from tests.engine.factories import event as make_event
from tests.integration.harness import free_port
from tests.integration.prefect_server import (
    api_call,
    create_block_document,
    create_deployment,
    create_flow_run,
    create_work_pool,
    create_work_queue,
    read_object,
)
from tests.transport.notify_servers import RecordingServer, serving

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

AUTOMATION_ID = UUID("0b8f2d4e-6a1c-4e3b-9d7f-5c2a1e0f9b84")
CONFIG = MarmotConfig.model_validate({"executors": {"action_timeout_s": 10.0}})
# Whole seconds, so the times Prefect echoes back compare equal as text.
NOW = datetime.now(UTC).replace(microsecond=0)


class JinjaParameters:
    """Renders every string in a JSON-like value with plain Jinja (until the real
    renderer is there)."""

    async def render_parameters(self, value: Any, run: ActionRun) -> Any:
        if isinstance(value, str):
            return jinja2.Template(value).render(automation=run.automation, event=run.event)
        if isinstance(value, dict):
            return {k: await self.render_parameters(v, run) for k, v in value.items()}
        if isinstance(value, list):
            return [await self.render_parameters(v, run) for v in value]
        return value


def _renderer(client: OrchestratorClient | None) -> ParameterRenderer:
    try:
        from marmot.transport.actions.rendering import Renderer
    except ImportError:
        return JinjaParameters()
    renderer: ParameterRenderer = Renderer(CONFIG, client)
    return renderer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(prefect_api: str) -> AsyncIterator[OrchestratorClient]:
    orchestrator = OrchestratorClient(prefect_api, timeout_s=CONFIG.executors.action_timeout_s)
    yield orchestrator
    await orchestrator.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def runners(client: OrchestratorClient, clock: ManualClock) -> dict[str, Runner]:
    return orchestration_runners(client, _renderer(client), clock=clock)


@pytest.fixture
def web() -> Iterator[RecordingServer]:
    yield from serving()


def run_of(
    action: dict[str, Any],
    *,
    resource: str = "marmot.test.resource",
    related: Sequence[Mapping[str, str]] = (),
    labels: Mapping[str, str] | None = None,
    with_event: bool = True,
    key: str | None = None,
) -> ActionRun:
    """An ``ActionRun`` of ``action``, triggered by an event on ``resource`` (and
    ``related`` resources), or by no event at all."""
    automation = Automation.model_validate(
        {
            "id": str(AUTOMATION_ID),
            "name": "orchestrator watch",
            "trigger": {"type": "event", "expect": ["marmot.test.fired"]},
            "actions": [action],
        }
    )
    triggering: Event | None = (
        make_event("marmot.test.fired", 0, resource_id=resource, related=related, id=uuid4())
        if with_event
        else None
    )
    firing = Firing(
        id=uuid4(),
        automation_id=automation.id,
        trigger_path="trigger",
        labels=dict(labels or {}),
        triggering_event=triggering,
        fired_us=0,
    )
    return ActionRun(
        parse_action(action),
        automation,
        firing,
        triggering,
        index=0,
        key=key or f"{firing.id}:0",
    )


def flow_run_state(api: str, flow_run_id: str) -> dict[str, Any]:
    flow_run = read_object(api, f"flow_runs/{flow_run_id}")
    assert flow_run is not None, f"flow run {flow_run_id} is gone"
    state: dict[str, Any] = flow_run["state"]
    return state


def deployment_runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = api_call(
        api,
        "POST",
        "flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}},
    )
    return runs


def pause_directly(api: str, flow_run_id: str) -> None:
    """Pause a running flow run the way a flow's own ``pause_flow_run`` does."""
    result = api_call(
        api,
        "POST",
        f"flow_runs/{flow_run_id}/set_state",
        json={
            "state": {
                "type": "PAUSED",
                "name": "Paused",
                "state_details": {
                    "pause_timeout": rfc3339(datetime.now(UTC) + timedelta(hours=1)),
                    "pause_reschedule": False,
                },
            }
        },
    )
    assert result["status"] == "ACCEPT", result


# -- flow runs -------------------------------------------------------------------


async def test_cancel_flow_run_leaves_a_running_run_cancelling(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    flow_run = create_flow_run(prefect_api)

    result = await runners["cancel-flow-run"](
        run_of({"type": "cancel-flow-run"}, resource=f"prefect.flow-run.{flow_run['id']}")
    )

    state = flow_run_state(prefect_api, flow_run["id"])
    assert (state["type"], state["name"]) == ("CANCELLING", "Cancelling")
    assert state["message"] == f"Cancelled by Automation {AUTOMATION_ID}"
    assert result.detail == f"cancelled flow run {flow_run['id']} (now Cancelling)"
    assert result.extra["flow_run_id"] == flow_run["id"]


async def test_suspend_flow_run_suspends_a_deployment_run_for_an_hour(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    deployment = create_deployment(prefect_api)
    flow_run = create_flow_run(prefect_api, deployment_id=deployment["id"])

    result = await runners["suspend-flow-run"](
        run_of(
            {"type": "suspend-flow-run"},
            resource=f"prefect.deployment.{deployment['id']}",
            related=[
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run['id']}",
                    "prefect.resource.role": "flow-run",
                }
            ],
        )
    )

    state = flow_run_state(prefect_api, flow_run["id"])
    assert (state["type"], state["name"]) == ("PAUSED", "Suspended")
    assert state["message"] == f"Suspended by Automation {AUTOMATION_ID}"
    details = state["state_details"]
    assert details["pause_reschedule"] is True
    assert details["pause_timeout"] == rfc3339(NOW + timedelta(hours=1))
    assert result.extra["state_name"] == "Suspended"


async def test_suspending_a_run_without_a_deployment_fails_with_prefects_reason(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    flow_run = create_flow_run(prefect_api)

    with pytest.raises(OrchestrationRefused, match="Cannot suspend flows without a deployment"):
        await runners["suspend-flow-run"](
            run_of({"type": "suspend-flow-run"}, resource=f"prefect.flow-run.{flow_run['id']}")
        )

    assert flow_run_state(prefect_api, flow_run["id"])["type"] == "RUNNING"


async def test_resume_flow_run_resumes_a_paused_run(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    flow_run = create_flow_run(prefect_api)
    pause_directly(prefect_api, flow_run["id"])

    result = await runners["resume-flow-run"](
        run_of({"type": "resume-flow-run"}, resource=f"prefect.flow-run.{flow_run['id']}")
    )

    assert flow_run_state(prefect_api, flow_run["id"])["type"] == "RUNNING"
    assert result.detail == f"resumed flow run {flow_run['id']} (now Running)"


async def test_a_suspended_run_is_rescheduled_when_resumed(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    deployment = create_deployment(prefect_api)
    flow_run = create_flow_run(prefect_api, deployment_id=deployment["id"])
    target = f"prefect.flow-run.{flow_run['id']}"
    await runners["suspend-flow-run"](run_of({"type": "suspend-flow-run"}, resource=target))

    await runners["resume-flow-run"](run_of({"type": "resume-flow-run"}, resource=target))

    state = flow_run_state(prefect_api, flow_run["id"])
    assert (state["type"], state["name"]) == ("SCHEDULED", "Resuming")


async def test_resuming_a_run_that_is_not_paused_fails_with_prefects_reason(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    flow_run = create_flow_run(prefect_api)

    with pytest.raises(ActionFailed, match="Cannot resume a flow run that is not paused"):
        await runners["resume-flow-run"](
            run_of({"type": "resume-flow-run"}, resource=f"prefect.flow-run.{flow_run['id']}")
        )


async def test_change_flow_run_state_sets_the_named_state(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    flow_run = create_flow_run(prefect_api)
    action = {
        "type": "change-flow-run-state",
        "state": "failed",
        "name": "Gave Up",
        "message": "too slow",
    }

    result = await runners["change-flow-run-state"](
        run_of(action, resource=f"prefect.flow-run.{flow_run['id']}")
    )

    state = flow_run_state(prefect_api, flow_run["id"])
    assert (state["type"], state["name"], state["message"]) == ("FAILED", "Gave Up", "too slow")
    assert result.extra["state_type"] == "FAILED"


async def test_change_flow_run_state_without_a_message_says_which_automation(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    flow_run = create_flow_run(prefect_api)

    await runners["change-flow-run-state"](
        run_of(
            {"type": "change-flow-run-state", "state": "COMPLETED"},
            resource=f"prefect.flow-run.{flow_run['id']}",
        )
    )

    state = flow_run_state(prefect_api, flow_run["id"])
    assert (state["type"], state["name"]) == ("COMPLETED", "Completed")
    assert state["message"] == f"State changed by Automation {AUTOMATION_ID}"


async def test_force_makes_prefect_take_a_transition_it_would_reject(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    flow_run = create_flow_run(prefect_api, state_type="COMPLETED")
    target = f"prefect.flow-run.{flow_run['id']}"
    pause = {"type": "change-flow-run-state", "state": "PAUSED"}

    with pytest.raises(OrchestrationRefused, match="already in terminal state COMPLETED"):
        await runners["change-flow-run-state"](run_of(pause, resource=target))
    assert flow_run_state(prefect_api, flow_run["id"])["type"] == "COMPLETED"

    await runners["change-flow-run-state"](run_of({**pause, "force": True}, resource=target))
    assert flow_run_state(prefect_api, flow_run["id"])["type"] == "PAUSED"


async def test_a_state_prefect_says_to_wait_for_is_retried_after_its_delay(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    flow_run = api_call(
        prefect_api,
        "POST",
        "flow_runs/",
        json={
            "flow_id": create_deployment(prefect_api)["flow_id"],
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": rfc3339(later)}},
        },
    )

    with pytest.raises(TransientFailure, match="Scheduled time is in the future") as failure:
        await runners["change-flow-run-state"](
            run_of(
                {"type": "change-flow-run-state", "state": "RUNNING"},
                resource=f"prefect.flow-run.{flow_run['id']}",
            )
        )

    assert failure.value.retry_after_s is not None
    assert failure.value.retry_after_s > 3600


async def test_delete_flow_run_removes_it(prefect_api: str, runners: dict[str, Runner]) -> None:
    flow_run = create_flow_run(prefect_api)

    result = await runners["delete-flow-run"](
        run_of({"type": "delete-flow-run", "source": "selected", "flow_run_id": flow_run["id"]})
    )

    assert read_object(prefect_api, f"flow_runs/{flow_run['id']}") is None
    assert result.detail == f"deleted flow run {flow_run['id']}"


async def test_a_flow_run_named_by_the_firings_labels_is_found_without_an_event(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    # A proactive trigger counting per flow run fires with no event, as in Prefect.
    flow_run = create_flow_run(prefect_api)

    await runners["cancel-flow-run"](
        run_of(
            {"type": "cancel-flow-run"},
            labels={"prefect.resource.id": f"prefect.flow-run.{flow_run['id']}"},
            with_event=False,
        )
    )

    assert flow_run_state(prefect_api, flow_run["id"])["type"] == "CANCELLING"


# -- deployments -------------------------------------------------------------------


async def test_run_deployment_creates_a_run_with_rendered_parameters_later(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    pool = create_work_pool(prefect_api)
    queue = create_work_queue(prefect_api, pool["name"])
    deployment = create_deployment(
        prefect_api,
        work_pool_name=pool["name"],
        work_queue_name=queue["name"],
        parameters={"region": "eu", "who": "nobody"},
        tags=["etl", "nightly"],
    )
    action = {
        "type": "run-deployment",
        "source": "selected",
        "deployment_id": deployment["id"],
        "parameters": {"who": "{{ automation.name }}", "attempts": 3},
        "job_variables": {"env": {"CAUSE": "{{ event.event }}"}},
        "schedule_after": 600,
    }
    run = run_of(action)

    result = await runners["run-deployment"](run)

    [flow_run] = deployment_runs(prefect_api, deployment["id"])
    assert flow_run["id"] == result.extra["flow_run_id"]
    assert flow_run["parameters"] == {"region": "eu", "who": "orchestrator watch", "attempts": 3}
    assert flow_run["job_variables"] == {"env": {"CAUSE": "marmot.test.fired"}}
    assert flow_run["state_type"] == "SCHEDULED"
    assert flow_run["expected_start_time"] == rfc3339(NOW + timedelta(minutes=10))
    assert flow_run["idempotency_key"] == run.key
    # Tags and work queue come from the deployment, as in Prefect.
    assert sorted(flow_run["tags"]) == ["etl", "nightly"]
    assert flow_run["work_queue_name"] == queue["name"]
    assert result.extra["deployment_id"] == deployment["id"]
    assert result.detail == (
        f"ran deployment {deployment['id']}: flow run {flow_run['name']!r} ({flow_run['id']}) "
        f"scheduled for {flow_run['expected_start_time']}"
    )


async def test_run_deployment_twice_with_one_key_creates_one_run(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    deployment = create_deployment(prefect_api)
    action = {"type": "run-deployment", "source": "selected", "deployment_id": deployment["id"]}

    first = await runners["run-deployment"](run_of(action, key="firing-7:0"))
    again = await runners["run-deployment"](run_of(action, key="firing-7:0"))
    other = await runners["run-deployment"](run_of(action, key="firing-8:0"))

    assert first.extra["flow_run_id"] == again.extra["flow_run_id"]
    assert other.extra["flow_run_id"] != first.extra["flow_run_id"]
    assert len(deployment_runs(prefect_api, deployment["id"])) == 2


async def test_run_deployment_infers_the_deployment_from_a_related_resource(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    deployment = create_deployment(prefect_api)
    flow_run = create_flow_run(prefect_api)

    await runners["run-deployment"](
        run_of(
            {"type": "run-deployment", "source": "inferred"},
            resource=f"prefect.flow-run.{flow_run['id']}",
            related=[
                {
                    "prefect.resource.id": f"prefect.deployment.{deployment['id']}",
                    "prefect.resource.role": "deployment",
                }
            ],
        )
    )

    [created] = deployment_runs(prefect_api, deployment["id"])
    assert created["expected_start_time"] == rfc3339(NOW)


async def test_pause_and_resume_deployment_flip_paused(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    deployment = create_deployment(prefect_api)
    action = {"source": "selected", "deployment_id": deployment["id"]}

    paused = await runners["pause-deployment"](run_of({"type": "pause-deployment", **action}))
    assert deployment_now(prefect_api, deployment["id"])["paused"] is True
    await runners["resume-deployment"](run_of({"type": "resume-deployment", **action}))

    assert deployment_now(prefect_api, deployment["id"])["paused"] is False
    assert paused.detail == f"paused deployment {deployment['id']}"


def deployment_now(api: str, deployment_id: str) -> dict[str, Any]:
    deployment = read_object(api, f"deployments/{deployment_id}")
    assert deployment is not None
    return deployment


# -- work pools and queues ---------------------------------------------------------


async def test_pause_and_resume_work_pool_flip_is_paused(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    pool = create_work_pool(prefect_api, name=f"pool with spaces {uuid4().hex[:6]}")
    related = [
        {"prefect.resource.id": f"prefect.work-pool.{pool['id']}", "prefect.resource.role": "wp"}
    ]

    paused = await runners["pause-work-pool"](
        run_of({"type": "pause-work-pool", "source": "inferred"}, related=related)
    )
    assert work_pool(prefect_api, pool["id"])["is_paused"] is True

    resumed = await runners["resume-work-pool"](
        run_of({"type": "resume-work-pool", "source": "selected", "work_pool_id": pool["id"]})
    )
    assert work_pool(prefect_api, pool["id"])["is_paused"] is False
    assert paused.detail == f"paused work pool {pool['name']!r}"
    assert resumed.extra == {"work_pool_id": pool["id"], "work_pool_name": pool["name"]}


def work_pool(api: str, pool_id: str) -> dict[str, Any]:
    [pool] = api_call(
        api, "POST", "work_pools/filter", json={"work_pools": {"id": {"any_": [pool_id]}}}
    )
    assert isinstance(pool, dict)
    return pool


async def test_pause_and_resume_work_queue_flip_is_paused(
    prefect_api: str, runners: dict[str, Runner]
) -> None:
    queue = create_work_queue(prefect_api, create_work_pool(prefect_api)["name"])
    resource = f"prefect.work-queue.{queue['id']}"

    await runners["pause-work-queue"](
        run_of({"type": "pause-work-queue", "source": "inferred"}, resource=resource)
    )
    assert work_queue_paused(prefect_api, queue["id"]) is True

    await runners["resume-work-queue"](
        run_of({"type": "resume-work-queue", "source": "inferred"}, resource=resource)
    )
    assert work_queue_paused(prefect_api, queue["id"]) is False


def work_queue_paused(api: str, queue_id: str) -> bool:
    queue = read_object(api, f"work_queues/{queue_id}")
    assert queue is not None
    return bool(queue["is_paused"])


# -- failures ----------------------------------------------------------------------


async def test_a_target_that_cannot_be_inferred_fails_with_the_reason(
    runners: dict[str, Runner],
) -> None:
    with pytest.raises(ActionFailed, match="concerns no flow-run"):
        await runners["cancel-flow-run"](
            run_of({"type": "cancel-flow-run"}, resource="prefect.deployment.not-a-flow-run")
        )
    with pytest.raises(ActionFailed, match="no triggering event to infer the work-queue"):
        await runners["pause-work-queue"](
            run_of({"type": "pause-work-queue", "source": "inferred"}, with_event=False)
        )


@pytest.mark.parametrize(
    ("action", "missing"),
    [
        ({"type": "cancel-flow-run", "source": "selected", "flow_run_id": "{id}"}, "flow run"),
        # Prefect's own /resume answers HTTP 500 here; it must still read as "not found".
        ({"type": "resume-flow-run", "source": "selected", "flow_run_id": "{id}"}, "flow run"),
        ({"type": "delete-flow-run", "source": "selected", "flow_run_id": "{id}"}, "flow run"),
        ({"type": "run-deployment", "deployment_id": "{id}"}, "deployment"),
        ({"type": "pause-deployment", "deployment_id": "{id}"}, "deployment"),
        ({"type": "resume-work-pool", "work_pool_id": "{id}"}, "work pool"),
        ({"type": "pause-work-queue", "work_queue_id": "{id}"}, "work queue"),
    ],
)
async def test_an_unknown_id_fails_saying_what_was_not_found(
    runners: dict[str, Runner], action: dict[str, str], missing: str
) -> None:
    unknown = uuid4()
    filled = {k: v.format(id=unknown) for k, v in action.items()}

    with pytest.raises(OrchestratorNotFound, match=f"{missing} {unknown} was not found"):
        await runners[filled["type"]](run_of(filled))


async def test_a_server_error_is_transient(client: OrchestratorClient) -> None:
    # Prefect's /resume fails with HTTP 500 for an unknown flow run: a real 5xx.
    with pytest.raises(TransientFailure, match="HTTP 500"):
        await client.resume_flow_run(uuid4())


async def test_a_refused_request_fails_with_prefects_detail(client: OrchestratorClient) -> None:
    flow_run = create_flow_run(client.api_url)

    with pytest.raises(ActionFailed, match=r"HTTP 422.*body\.state\.type") as failure:
        await client.set_flow_run_state(UUID(flow_run["id"]), {"type": "NAPPING"})

    assert not isinstance(failure.value, TransientFailure)


async def test_an_orchestrator_that_is_not_listening_is_transient() -> None:
    closed = OrchestratorClient(f"http://127.0.0.1:{free_port()}/api", timeout_s=5.0)
    runners = orchestration_runners(closed, JinjaParameters())
    try:
        with pytest.raises(TransientFailure, match="orchestrator unreachable"):
            await runners["pause-deployment"](
                run_of({"type": "pause-deployment", "deployment_id": str(uuid4())})
            )
    finally:
        await closed.aclose()


async def test_an_orchestrator_that_does_not_answer_in_time_is_transient() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        slow = OrchestratorClient(f"http://127.0.0.1:{port}/api", timeout_s=0.3)
        try:
            with pytest.raises(TransientFailure, match=r"did not answer .* within 0.3 s"):
                await slow.read_flow_run(uuid4())
        finally:
            await slow.aclose()


@pytest.mark.parametrize("status", [429, 503])
async def test_busy_answers_are_transient_and_honour_retry_after(
    web: RecordingServer, status: int
) -> None:
    flow_id = uuid4()
    web.reply(f"/api/flows/{flow_id}", status, '{"detail": "slow down"}', **{"Retry-After": "7"})
    busy = OrchestratorClient(web.url("/api"), timeout_s=5.0)
    try:
        with pytest.raises(TransientFailure, match=f"HTTP {status}: slow down") as failure:
            await busy.read_flow(flow_id)
    finally:
        await busy.aclose()

    assert failure.value.retry_after_s == 7.0


async def test_the_api_key_is_sent_as_a_bearer_token(web: RecordingServer) -> None:
    flow_id = uuid4()
    web.reply(f"/api/flows/{flow_id}", 200, '{"id": "x"}')
    keyed = OrchestratorClient(web.url("/api/"), api_key="pnu_secret", timeout_s=5.0)
    try:
        assert await keyed.read_flow(flow_id) == {"id": "x"}
    finally:
        await keyed.aclose()

    [request] = web.on(f"/api/flows/{flow_id}")
    assert request.headers["authorization"] == "Bearer pnu_secret"


async def test_without_an_orchestrator_every_runner_says_what_to_set() -> None:
    runners = orchestration_runners(None, JinjaParameters())

    assert sorted(runners) == sorted(ORCHESTRATION_ACTION_TYPES)
    with pytest.raises(
        ActionFailed, match=r"run-deployment needs an orchestrator: set orchestrator\.api_url"
    ):
        await runners["run-deployment"](
            run_of({"type": "run-deployment", "deployment_id": str(uuid4())})
        )


async def test_a_runner_refuses_an_action_of_another_type(runners: dict[str, Runner]) -> None:
    with pytest.raises(ActionFailed, match="pause-work-pool cannot run a pause-work-queue"):
        await runners["pause-work-pool"](
            run_of({"type": "pause-work-queue", "work_queue_id": str(uuid4())})
        )


# -- reads used by templates and blocks ----------------------------------------------


async def test_reads_return_prefects_objects(prefect_api: str, client: OrchestratorClient) -> None:
    pool = create_work_pool(prefect_api)
    queue = create_work_queue(prefect_api, pool["name"])
    deployment = create_deployment(prefect_api, work_pool_name=pool["name"])
    flow_run = create_flow_run(prefect_api, deployment_id=deployment["id"])

    assert (await client.read_flow_run(UUID(flow_run["id"])))["deployment_id"] == deployment["id"]
    assert (await client.read_flow(UUID(deployment["flow_id"])))["id"] == deployment["flow_id"]
    assert (await client.read_deployment(UUID(deployment["id"])))["name"] == deployment["name"]
    assert (await client.read_work_queue(UUID(queue["id"])))["name"] == queue["name"]
    assert (await client.read_work_pool(UUID(pool["id"])))["name"] == pool["name"]
    with pytest.raises(OrchestratorNotFound, match=r"work pool .* was not found"):
        await client.read_work_pool(uuid4())


async def test_a_block_document_is_read_with_its_secrets(
    prefect_api: str, client: OrchestratorClient
) -> None:
    document = create_block_document(
        prefect_api, {"url": "https://hooks.example/secret-token"}, secret_fields=("url",)
    )
    assert document["data"] == {"url": "********"}  # Prefect hides it unless asked

    read = await client.read_block_document(UUID(document["id"]))

    assert read["data"] == {"url": "https://hooks.example/secret-token"}
    with pytest.raises(NotFound, match=r"block document .* was not found"):
        await client.read_block_document(uuid4())
