"""The flow-run, deployment, work-pool and work-queue actions, carried out on the orchestrator.

Each runner works out its target (selected in the action, or inferred from
the firing), makes one attempt through :class:`OrchestratorClient` and says
what it did; the executor retries a ``TransientFailure``. The states, messages
and request bodies are the ones Prefect's own automations send, so a flow run
looks the same in Prefect's UI whichever engine acted on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Protocol, TypeVar
from uuid import UUID

from marmot.actors.action_runs import ActionFailed, ActionResult, ActionRun, Runner
from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.clock import Clock
from marmot.engine.models.actions import (
    Action,
    CancelFlowRun,
    ChangeFlowRunState,
    DeleteFlowRun,
    PauseDeployment,
    PauseWorkPool,
    PauseWorkQueue,
    ResumeDeployment,
    ResumeFlowRun,
    ResumeWorkPool,
    ResumeWorkQueue,
    RunDeployment,
    SuspendFlowRun,
    TargetedAction,
)
from marmot.engine.models.events import RESOURCE_ID
from marmot.engine.targets import TargetNotFound, resolve_target
from marmot.engine.timestamps import rfc3339
from marmot.transport.orchestrator import OrchestratorClient, automation_headers

__all__ = [
    "ORCHESTRATION_ACTION_TYPES",
    "SUSPEND_TIMEOUT",
    "ParameterRenderer",
    "orchestration_runners",
]

ORCHESTRATION_ACTION_TYPES = (
    "cancel-flow-run",
    "suspend-flow-run",
    "resume-flow-run",
    "change-flow-run-state",
    "delete-flow-run",
    "run-deployment",
    "pause-deployment",
    "resume-deployment",
    "pause-work-pool",
    "resume-work-pool",
    "pause-work-queue",
    "resume-work-queue",
)
"""The action types :func:`orchestration_runners` provides."""

SUSPEND_TIMEOUT = timedelta(hours=1)
"""How long a suspended flow run waits to be resumed before Prefect fails it (Prefect's value)."""

_FLOW_RUN_PREFIX = "prefect.flow-run."

A = TypeVar("A", bound=Action)


class ParameterRenderer(Protocol):
    """Renders the templates inside a JSON-like value (``transport/actions/rendering.py``)."""

    async def render_parameters(self, value: Any, run: ActionRun) -> Any:
        """``value`` with every template in it rendered for ``run``; raises
        ``ActionFailed`` when a template fails."""
        ...


def orchestration_runners(
    client: OrchestratorClient | None,
    renderer: ParameterRenderer,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Runner]:
    """Runners for every orchestrator action type (:data:`ORCHESTRATION_ACTION_TYPES`).

    Without a ``client`` each runner fails with the reason. ``clock`` sets the
    time a run-deployment is scheduled from and a suspension expires from.
    """
    if client is None:
        return {kind: _needs_orchestrator(kind) for kind in ORCHESTRATION_ACTION_TYPES}
    actions = _OrchestratorActions(client, renderer, clock)
    return {
        "cancel-flow-run": actions.cancel_flow_run,
        "suspend-flow-run": actions.suspend_flow_run,
        "resume-flow-run": actions.resume_flow_run,
        "change-flow-run-state": actions.change_flow_run_state,
        "delete-flow-run": actions.delete_flow_run,
        "run-deployment": actions.run_deployment,
        "pause-deployment": actions.pause_deployment,
        "resume-deployment": actions.resume_deployment,
        "pause-work-pool": actions.pause_work_pool,
        "resume-work-pool": actions.resume_work_pool,
        "pause-work-queue": actions.pause_work_queue,
        "resume-work-queue": actions.resume_work_queue,
    }


def _needs_orchestrator(kind: str) -> Runner:
    async def refuse(run: ActionRun) -> ActionResult:
        raise ActionFailed(f"{kind} needs an orchestrator: set orchestrator.api_url")

    return refuse


class _OrchestratorActions:
    """The runners, sharing one client, renderer and clock."""

    def __init__(
        self, client: OrchestratorClient, renderer: ParameterRenderer, clock: Clock
    ) -> None:
        self._client = client
        self._renderer = renderer
        self._clock = clock

    # -- flow runs ---------------------------------------------------------

    async def cancel_flow_run(self, run: ActionRun) -> ActionResult:
        """Propose Cancelling, as Prefect does; the run's worker then stops it."""
        _expect(run, CancelFlowRun)
        state = {
            "type": "CANCELLING",
            "message": f"Cancelled by Automation {run.automation.id}",
        }
        return await self._set_state(run, state, force=False, verb="cancelled")

    async def suspend_flow_run(self, run: ActionRun) -> ActionResult:
        """Propose Prefect's Suspended state: Paused, rescheduled on resume, expiring in an hour.

        Prefect only suspends a running flow run of a deployment; its refusal
        comes back as the reason.
        """
        _expect(run, SuspendFlowRun)
        state = {
            "type": "PAUSED",
            "name": "Suspended",
            "message": f"Suspended by Automation {run.automation.id}",
            "state_details": {
                "pause_timeout": rfc3339(self._clock.now() + SUSPEND_TIMEOUT),
                "pause_reschedule": True,
                "pause_key": None,
            },
        }
        return await self._set_state(run, state, force=False, verb="suspended")

    async def change_flow_run_state(self, run: ActionRun) -> ActionResult:
        """Propose the action's state type, name and message, forced if it says so."""
        action = _expect(run, ChangeFlowRunState)
        state = {
            "type": action.state.value,
            "name": action.name,
            "message": action.message or f"State changed by Automation {run.automation.id}",
        }
        return await self._set_state(run, state, force=action.force, verb="changed the state of")

    async def resume_flow_run(self, run: ActionRun) -> ActionResult:
        """Resume a paused (back to Running) or suspended (rescheduled) flow run."""
        _expect(run, ResumeFlowRun)
        flow_run_id = _flow_run_target(run)
        # Prefect's /resume answers HTTP 500 for an unknown id; reading the run
        # first turns that into a plain "not found" instead of a retried failure.
        await self._client.read_flow_run(flow_run_id)
        result = await self._client.resume_flow_run(flow_run_id)
        return _state_result("resumed", flow_run_id, result)

    async def delete_flow_run(self, run: ActionRun) -> ActionResult:
        """Delete the flow run."""
        _expect(run, DeleteFlowRun)
        flow_run_id = _flow_run_target(run)
        await self._client.delete_flow_run(flow_run_id)
        return ActionResult(
            f"deleted flow run {flow_run_id}", extra={"flow_run_id": str(flow_run_id)}
        )

    async def _set_state(
        self, run: ActionRun, state: Mapping[str, Any], *, force: bool, verb: str
    ) -> ActionResult:
        flow_run_id = _flow_run_target(run)
        result = await self._client.set_flow_run_state(flow_run_id, state, force=force)
        return _state_result(verb, flow_run_id, result)

    # -- deployments -------------------------------------------------------

    async def run_deployment(self, run: ActionRun) -> ActionResult:
        """Create a flow run of the deployment, scheduled ``schedule_after`` from now.

        Parameters and job variables are rendered as templates. The run's
        idempotency key is the action's, so a retried or replayed action finds
        the flow run it created instead of creating another. Tags and work
        queue are left to the deployment, as Prefect leaves them.
        """
        action = _expect(run, RunDeployment)
        deployment_id = _target(run)
        parameters = await self._render_mapping(action.parameters, run, "parameters")
        job_variables = (
            await self._render_mapping(action.job_variables, run, "job_variables")
            if action.job_variables is not None
            else None
        )
        scheduled = self._clock.now() + action.schedule_after
        body: dict[str, Any] = {
            "state": {
                "type": "SCHEDULED",
                "name": "Scheduled",
                "state_details": {"scheduled_time": rfc3339(scheduled)},
            },
            "parameters": parameters,
            "idempotency_key": run.key,
        }
        if job_variables is not None:
            body["job_variables"] = job_variables
        # Prefect records the automation as the run's creator (created_by AUTOMATION).
        creator = automation_headers(run.automation.id, run.automation.name)
        flow_run = await self._client.create_flow_run_from_deployment(
            deployment_id, body, created_by=creator
        )
        flow_run_id = flow_run.get("id")
        name = flow_run.get("name")
        starts = flow_run.get("expected_start_time") or rfc3339(scheduled)
        return ActionResult(
            f"ran deployment {deployment_id}: flow run {name!r} ({flow_run_id}) "
            f"scheduled for {starts}",
            extra={
                "deployment_id": str(deployment_id),
                "flow_run_id": flow_run_id,
                "flow_run_name": name,
                "scheduled_time": starts,
                "idempotency_key": run.key,
            },
        )

    async def pause_deployment(self, run: ActionRun) -> ActionResult:
        """Pause the deployment's schedules (Prefect also drops its auto-scheduled runs)."""
        _expect(run, PauseDeployment)
        return await self._deployment_command(run, self._client.pause_deployment, "paused")

    async def resume_deployment(self, run: ActionRun) -> ActionResult:
        """Resume the deployment's schedules."""
        _expect(run, ResumeDeployment)
        return await self._deployment_command(run, self._client.resume_deployment, "resumed")

    async def _deployment_command(
        self,
        run: ActionRun,
        command: Callable[[UUID], Awaitable[dict[str, Any]]],
        verb: str,
    ) -> ActionResult:
        deployment_id = _target(run)
        await command(deployment_id)
        return ActionResult(
            f"{verb} deployment {deployment_id}", extra={"deployment_id": str(deployment_id)}
        )

    async def _render_mapping(
        self, value: dict[str, Any] | None, run: ActionRun, field: str
    ) -> dict[str, Any]:
        if not value:
            return {}
        rendered = await self._renderer.render_parameters(value, run)
        if not isinstance(rendered, dict):
            raise ActionFailed(
                f"run-deployment {field} rendered to {type(rendered).__name__}, not an object"
            )
        return rendered

    # -- work pools and work queues ----------------------------------------

    async def pause_work_pool(self, run: ActionRun) -> ActionResult:
        """Pause the work pool so its workers take no more runs."""
        _expect(run, PauseWorkPool)
        return await self._set_work_pool(run, is_paused=True)

    async def resume_work_pool(self, run: ActionRun) -> ActionResult:
        """Resume a paused work pool."""
        _expect(run, ResumeWorkPool)
        return await self._set_work_pool(run, is_paused=False)

    async def _set_work_pool(self, run: ActionRun, *, is_paused: bool) -> ActionResult:
        work_pool_id = _target(run)
        # Prefect updates pools by name; the action names one by id.
        pool = await self._client.read_work_pool(work_pool_id)
        name = str(pool.get("name", ""))
        if not name:
            raise ActionFailed(f"work pool {work_pool_id} has no name on the orchestrator")
        await self._client.update_work_pool(name, is_paused=is_paused)
        return ActionResult(
            f"{'paused' if is_paused else 'resumed'} work pool {name!r}",
            extra={"work_pool_id": str(work_pool_id), "work_pool_name": name},
        )

    async def pause_work_queue(self, run: ActionRun) -> ActionResult:
        """Pause the work queue so no runs are taken from it."""
        _expect(run, PauseWorkQueue)
        return await self._set_work_queue(run, is_paused=True)

    async def resume_work_queue(self, run: ActionRun) -> ActionResult:
        """Resume a paused work queue."""
        _expect(run, ResumeWorkQueue)
        return await self._set_work_queue(run, is_paused=False)

    async def _set_work_queue(self, run: ActionRun, *, is_paused: bool) -> ActionResult:
        work_queue_id = _target(run)
        await self._client.update_work_queue(work_queue_id, is_paused=is_paused)
        return ActionResult(
            f"{'paused' if is_paused else 'resumed'} work queue {work_queue_id}",
            extra={"work_queue_id": str(work_queue_id)},
        )


def _expect(run: ActionRun, kind: type[A]) -> A:
    action = run.action
    if not isinstance(action, kind):
        expected = kind.model_fields["type"].default
        raise ActionFailed(f"{expected} cannot run a {action.type} action")
    return action


def _target(run: ActionRun) -> UUID:
    try:
        return resolve_target(run.action, run.event)
    except TargetNotFound as exc:
        raise ActionFailed(str(exc)) from None


def _flow_run_target(run: ActionRun) -> UUID:
    """The flow run to act on; an inferred one is looked for in the firing's labels first.

    Prefect does the same: a proactive trigger counting per flow run fires
    without an event, but its labels name the run.
    """
    action = run.action
    if not (isinstance(action, TargetedAction) and action.source == "selected"):
        labelled = run.firing.labels.get(RESOURCE_ID, "")
        if labelled.startswith(_FLOW_RUN_PREFIX):
            try:
                return UUID(labelled[len(_FLOW_RUN_PREFIX) :])
            except ValueError:
                pass  # not a flow run id after all: fall back to the event
    return _target(run)


def _state_result(verb: str, flow_run_id: UUID, result: Mapping[str, Any]) -> ActionResult:
    raw_state = result.get("state")
    state: Mapping[str, Any] = raw_state if isinstance(raw_state, Mapping) else {}
    state_type = state.get("type")
    state_name = state.get("name") or state_type
    now_in = f" (now {state_name})" if state_name else ""
    return ActionResult(
        f"{verb} flow run {flow_run_id}{now_in}",
        extra={
            "flow_run_id": str(flow_run_id),
            "status": result.get("status"),
            "state_type": state_type,
            "state_name": state_name,
        },
    )
