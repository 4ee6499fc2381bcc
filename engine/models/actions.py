"""Automation actions: what an automation does once its trigger fires.

Each action is a pydantic model tagged by ``type`` with Prefect's name for it; ``ActionTypes``
is the discriminated union and ``parse_action`` turns a JSON-style mapping into the right class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self, get_args
from uuid import UUID

from pydantic import Field, TypeAdapter, field_validator, model_validator

from marmot.engine.models._base import MarmotModel

__all__ = [
    "ACTION_TYPES",
    "DEFAULT_NOTIFICATION_BODY",
    "DEFAULT_NOTIFICATION_SUBJECT",
    "Action",
    "ActionTypes",
    "AutomationAction",
    "CallWebhook",
    "CancelFlowRun",
    "ChangeFlowRunState",
    "DeclareIncident",
    "DeleteFlowRun",
    "DeploymentAction",
    "DoNothing",
    "FlowRunAction",
    "PauseAutomation",
    "PauseDeployment",
    "PauseWorkPool",
    "PauseWorkQueue",
    "ResumeAutomation",
    "ResumeDeployment",
    "ResumeFlowRun",
    "ResumeWorkPool",
    "ResumeWorkQueue",
    "RunDeployment",
    "SendNotification",
    "SourceKind",
    "StateType",
    "SuspendFlowRun",
    "TargetedAction",
    "WorkPoolAction",
    "WorkQueueAction",
    "parse_action",
]

SourceKind = Literal["selected", "inferred"]
"""Where an action's target comes from: named in the action, or taken from the event."""

DEFAULT_NOTIFICATION_SUBJECT = "Prefect automated notification"

DEFAULT_NOTIFICATION_BODY = (
    "The automation '{{ automation.name }}' has been triggered.\n"
    "\n"
    "Triggering event: {{ event.event }}\n"
    "Resource: {{ event.resource.id }}\n"
    "Occurred at: {{ event.occurred }}\n"
)


class StateType(StrEnum):
    """The state types a flow run can be moved into."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"


class Action(MarmotModel):
    """Something an automation may do when it is triggered.

    ``template_fields`` name the fields Prefect checks as Jinja templates when
    an automation is saved, ``parameter_fields`` those holding run-deployment
    parameters (templates and ``__prefect_kind`` values); the edges that accept
    documents check them (``marmot.engine.templates.checks``).
    """

    template_fields: ClassVar[tuple[str, ...]] = ()
    parameter_fields: ClassVar[tuple[str, ...]] = ()
    # Carried out on the orchestrator (a Prefect server: orchestrator.api_url).
    acts_on_orchestrator: ClassVar[bool] = False

    type: str

    def _target(self) -> tuple[SourceKind, UUID | None] | None:
        """The action's source and target id, or None when it has no target."""
        return None

    def describe(self) -> str:
        """A short human label, e.g. ``run-deployment (selected 0f2a9c1e…)``."""
        target = self._target()
        if target is None:
            return self.type
        source, target_id = target
        if target_id is None:
            return f"{self.type} ({source})"
        return f"{self.type} ({source} {str(target_id)[:8]}…)"


class TargetedAction(Action):
    """An action aimed at one object, either selected by id or inferred from the event.

    Subclasses declare the id field and name it in ``target_field``.
    """

    target_field: ClassVar[str]

    source: SourceKind = "selected"

    def _target_id(self) -> UUID | None:
        value: UUID | None = getattr(self, self.target_field)
        return value

    def _target(self) -> tuple[SourceKind, UUID | None] | None:
        return self.source, self._target_id()

    @model_validator(mode="after")
    def _check_source_matches_target(self) -> Self:
        target_id = self._target_id()
        if self.source == "selected" and target_id is None:
            raise ValueError(f"{self.target_field} is required when source is 'selected'")
        if self.source == "inferred" and target_id is not None:
            raise ValueError(f"{self.target_field} must not be set when source is 'inferred'")
        return self


class DeploymentAction(TargetedAction):
    """Base for actions aimed at a deployment."""

    target_field: ClassVar[str] = "deployment_id"
    acts_on_orchestrator: ClassVar[bool] = True

    deployment_id: UUID | None = None


class FlowRunAction(TargetedAction):
    """Base for actions aimed at a flow run, by default the one the triggering event concerns."""

    target_field: ClassVar[str] = "flow_run_id"
    acts_on_orchestrator: ClassVar[bool] = True

    source: SourceKind = "inferred"
    flow_run_id: UUID | None = None


class WorkPoolAction(TargetedAction):
    """Base for actions aimed at a work pool."""

    target_field: ClassVar[str] = "work_pool_id"
    acts_on_orchestrator: ClassVar[bool] = True

    work_pool_id: UUID | None = None


class WorkQueueAction(TargetedAction):
    """Base for actions aimed at a work queue."""

    target_field: ClassVar[str] = "work_queue_id"
    acts_on_orchestrator: ClassVar[bool] = True

    work_queue_id: UUID | None = None


class AutomationAction(TargetedAction):
    """Base for actions aimed at an automation."""

    target_field: ClassVar[str] = "automation_id"

    automation_id: UUID | None = None


class DoNothing(Action):
    """Does nothing; useful for automations that should only record that they fired."""

    type: Literal["do-nothing"] = "do-nothing"


class RunDeployment(DeploymentAction):
    """Creates a flow run of a deployment, optionally with parameters and a delay."""

    parameter_fields = ("parameters", "job_variables")
    type: Literal["run-deployment"] = "run-deployment"
    parameters: dict[str, Any] | None = None
    job_variables: dict[str, Any] | None = None
    schedule_after: timedelta = timedelta(0)

    @model_validator(mode="after")
    def _check_schedule_after(self) -> Self:
        if self.schedule_after < timedelta(0):
            raise ValueError("schedule_after must not be negative")
        return self


class PauseDeployment(DeploymentAction):
    """Pauses a deployment's schedules."""

    type: Literal["pause-deployment"] = "pause-deployment"


class ResumeDeployment(DeploymentAction):
    """Resumes a paused deployment's schedules."""

    type: Literal["resume-deployment"] = "resume-deployment"


class ChangeFlowRunState(Action):
    """Moves the triggering flow run into the given state."""

    acts_on_orchestrator: ClassVar[bool] = True
    # Not templates: Prefect sends the state name and message as written.
    type: Literal["change-flow-run-state"] = "change-flow-run-state"
    name: str | None = None
    state: StateType
    message: str | None = None
    force: bool = False

    @field_validator("state", mode="before")
    @classmethod
    def _upper_case_state(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class CancelFlowRun(FlowRunAction):
    """Cancels a flow run."""

    type: Literal["cancel-flow-run"] = "cancel-flow-run"


class SuspendFlowRun(FlowRunAction):
    """Suspends a flow run, releasing its infrastructure until it is resumed."""

    type: Literal["suspend-flow-run"] = "suspend-flow-run"


class ResumeFlowRun(FlowRunAction):
    """Resumes a paused or suspended flow run."""

    type: Literal["resume-flow-run"] = "resume-flow-run"


class DeleteFlowRun(FlowRunAction):
    """Deletes a flow run."""

    type: Literal["delete-flow-run"] = "delete-flow-run"


class CallWebhook(Action):
    """Calls the webhook stored in a block, sending the rendered payload."""

    template_fields = ("payload",)
    type: Literal["call-webhook"] = "call-webhook"
    block_document_id: UUID
    payload: str = ""

    @field_validator("payload", mode="before")
    @classmethod
    def _mapping_as_json(cls, value: Any) -> Any:
        # Prefect takes a mapping (or list) here too and sends it as indented JSON.
        if isinstance(value, dict | list):
            return json.dumps(value, indent=2)
        return value


class SendNotification(Action):
    """Sends a notification through a notification block, with templated subject and body."""

    template_fields = ("subject", "body")
    type: Literal["send-notification"] = "send-notification"
    block_document_id: UUID
    subject: str = DEFAULT_NOTIFICATION_SUBJECT
    body: str = DEFAULT_NOTIFICATION_BODY


class PauseWorkPool(WorkPoolAction):
    """Pauses a work pool so its workers stop picking up runs."""

    type: Literal["pause-work-pool"] = "pause-work-pool"


class ResumeWorkPool(WorkPoolAction):
    """Resumes a paused work pool."""

    type: Literal["resume-work-pool"] = "resume-work-pool"


class PauseWorkQueue(WorkQueueAction):
    """Pauses a work queue so no runs are taken from it."""

    type: Literal["pause-work-queue"] = "pause-work-queue"


class ResumeWorkQueue(WorkQueueAction):
    """Resumes a paused work queue."""

    type: Literal["resume-work-queue"] = "resume-work-queue"


class PauseAutomation(AutomationAction):
    """Disables an automation so it stops evaluating its trigger."""

    type: Literal["pause-automation"] = "pause-automation"


class ResumeAutomation(AutomationAction):
    """Re-enables a paused automation."""

    type: Literal["resume-automation"] = "resume-automation"


class DeclareIncident(Action):
    """Declares an incident, with optional templated title, severity and summary."""

    template_fields = ("title", "severity", "summary")
    type: Literal["declare-incident"] = "declare-incident"
    title: str | None = None
    severity: str | None = None
    summary: str | None = None


ActionTypes = Annotated[
    DoNothing
    | RunDeployment
    | PauseDeployment
    | ResumeDeployment
    | ChangeFlowRunState
    | CancelFlowRun
    | SuspendFlowRun
    | ResumeFlowRun
    | DeleteFlowRun
    | CallWebhook
    | SendNotification
    | PauseWorkPool
    | ResumeWorkPool
    | PauseWorkQueue
    | ResumeWorkQueue
    | PauseAutomation
    | ResumeAutomation
    | DeclareIncident,
    Field(discriminator="type"),
]
"""Any action, told apart by its ``type``."""


def _type_name(cls: type[Action]) -> str:
    default = cls.model_fields["type"].default
    if not isinstance(default, str):  # pragma: no cover - guards against a malformed subclass
        raise TypeError(f"{cls.__name__} has no default type name")
    return default


ACTION_TYPES: dict[str, type[Action]] = {
    _type_name(cls): cls for cls in get_args(get_args(ActionTypes)[0])
}
"""Each action's type name mapped to its class."""

_ACTION_ADAPTER: TypeAdapter[ActionTypes] = TypeAdapter(ActionTypes)


def parse_action(data: Mapping[str, Any]) -> Action:
    """Validate a JSON-style mapping as whichever action its ``type`` names.

    Raises ``pydantic.ValidationError`` when the type is unknown or the fields are invalid.
    """
    return _ACTION_ADAPTER.validate_python(dict(data))
