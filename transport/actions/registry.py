"""Actions on Marmot itself: pause or resume an automation, declare an incident.

Pausing and resuming go through the daemon's registry, as the RPC does: the
runner checks that the automation exists and asks for the change in its
result; the daemon applies it (the automation's actor stops or starts and
its trigger state resets). Incidents are recorded in the store.
"""

from __future__ import annotations

from uuid import UUID

from marmot.actors.action_runs import ActionFailed, ActionResult, ActionRun, RegistryRequest, Runner
from marmot.actors.store import Store
from marmot.engine.errors import NotFound
from marmot.engine.models.actions import DeclareIncident
from marmot.engine.targets import TargetNotFound, resolve_target
from marmot.transport.actions.notifications import TemplateRenderer

__all__ = [
    "DEFAULT_INCIDENT_SEVERITY",
    "DEFAULT_INCIDENT_TITLE",
    "registry_runners",
]

DEFAULT_INCIDENT_TITLE = "{{ automation.name }} was triggered by {{ event.event }}"
DEFAULT_INCIDENT_SEVERITY = "high"


def _target(run: ActionRun) -> UUID:
    try:
        return resolve_target(run.action, run.event)
    except TargetNotFound as exc:
        raise ActionFailed(str(exc)) from None


def registry_runners(store: Store, renderer: TemplateRenderer) -> dict[str, Runner]:
    """Runners for ``pause-automation``, ``resume-automation`` and ``declare-incident``."""

    def existing(automation_id: UUID) -> str:
        try:
            return store.automations.read(automation_id).automation.name
        except NotFound:
            raise ActionFailed(f"automation {automation_id} does not exist") from None

    async def pause(run: ActionRun) -> ActionResult:
        target = _target(run)
        name = existing(target)
        return ActionResult(
            f"paused automation {name!r}", registry=RegistryRequest("pause", str(target))
        )

    async def resume(run: ActionRun) -> ActionResult:
        target = _target(run)
        name = existing(target)
        return ActionResult(
            f"resumed automation {name!r}", registry=RegistryRequest("resume", str(target))
        )

    async def declare(run: ActionRun) -> ActionResult:
        action = run.action
        assert isinstance(action, DeclareIncident)
        title = await renderer.render(action.title or DEFAULT_INCIDENT_TITLE, run)
        severity = await renderer.render(action.severity or DEFAULT_INCIDENT_SEVERITY, run)
        summary = await renderer.render(action.summary, run) if action.summary else ""
        incident = store.incidents.record(
            key=run.key,
            automation_id=run.automation.id,
            firing_id=run.firing.id,
            event_id=run.event.id if run.event is not None else None,
            title=title.strip(),
            severity=severity.strip(),
            summary=summary,
        )
        return ActionResult(
            f"declared incident {incident.id}: {incident.title}",
            extra={"incident_id": str(incident.id)},
        )

    return {"pause-automation": pause, "resume-automation": resume, "declare-incident": declare}
