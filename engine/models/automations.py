"""Automations: a trigger and the actions to run when it fires (SEMANTICS §5)."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from pydantic import Field, model_validator

from marmot.engine.models._base import MarmotModel
from marmot.engine.models.actions import ActionTypes, RunDeployment
from marmot.engine.models.triggers import EventTrigger, Posture, TriggerTypes

# SEMANTICS §5: every flow run created from a deployment passes these states,
# so a reactive trigger on them that runs a deployment can feed itself forever.
_LOOPING_EVENTS = frozenset(
    {
        "prefect.flow-run.Scheduled",
        "prefect.flow-run.Pending",
        "prefect.flow-run.Running",
        "prefect.flow-run.*",
    }
)

# Fields Prefect's server adds to automations it returns; accepted and dropped
# so an exported automation loads unchanged.
_SERVER_FIELDS = ("created", "updated", "created_by", "updated_by")


class Automation(MarmotModel):
    """A named trigger with the actions it runs when it fires or resolves."""

    id: UUID = Field(default_factory=uuid4)
    name: str = Field(min_length=1, max_length=512)
    description: str = ""
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    trigger: TriggerTypes
    actions: list[ActionTypes] = Field(default_factory=list)
    actions_on_trigger: list[ActionTypes] = Field(default_factory=list)
    actions_on_resolve: list[ActionTypes] = Field(default_factory=list)
    owner_resource: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_server_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in _SERVER_FIELDS):
            data = {k: v for k, v in data.items() if k not in _SERVER_FIELDS}
        return data

    @model_validator(mode="after")
    def _no_run_deployment_loop(self) -> Automation:
        trigger = self.trigger
        if not self.enabled or not isinstance(trigger, EventTrigger):
            return self
        if trigger.posture is not Posture.Reactive or not _LOOPING_EVENTS & trigger.expect:
            return self
        for action in self.actions:
            if not isinstance(action, RunDeployment):
                continue
            if action.source == "inferred":
                raise ValueError(
                    "running an inferred deployment on a flow run's Scheduled, Pending or "
                    "Running event would start an endless loop of flow runs"
                )
            if trigger.match.matches_every_resource_of_kind("prefect.flow-run") and all(
                spec.matches_every_resource_of_kind("prefect.flow-run")
                for spec in trigger.related_specs
            ):
                raise ValueError(
                    "running a deployment on every flow run's Scheduled, Pending or Running "
                    "event would start an endless loop of flow runs; narrow the trigger's "
                    "match or match_related"
                )
        return self
