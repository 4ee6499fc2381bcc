"""Marmot: Prefect automations as a standalone, actor-based rules engine.

The public API: the automation, trigger and action schemas (Prefect's shape),
the clients, events, the replay engine, and the error hierarchy. Each name is
imported on first use, so a process that needs one part of Marmot (an
automation actor imports ``marmot.actors``) does not load the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name is defined.
_HOMES: dict[str, str] = {
    "AsyncClient": "marmot.transport.client",
    "Automation": "marmot.sdk",
    "CallWebhook": "marmot.engine.models.actions",
    "CancelFlowRun": "marmot.engine.models.actions",
    "ChangeFlowRunState": "marmot.engine.models.actions",
    "Client": "marmot.transport.client",
    "CompoundTrigger": "marmot.engine.models.triggers",
    "Conflict": "marmot.engine.errors",
    "DaemonUnavailable": "marmot.engine.errors",
    "DeclareIncident": "marmot.engine.models.actions",
    "DeleteFlowRun": "marmot.engine.models.actions",
    "DeploymentTriggers": "marmot.deployments",
    "DoNothing": "marmot.engine.models.actions",
    "Evaluator": "marmot.engine.triggers.evaluator",
    "Event": "marmot.engine.models.events",
    "EventTrigger": "marmot.engine.models.triggers",
    "Firing": "marmot.engine.triggers.firing",
    "LimitExceeded": "marmot.engine.errors",
    "MarmotError": "marmot.engine.errors",
    "MetricTrigger": "marmot.engine.models.triggers",
    "MetricTriggerOperator": "marmot.engine.models.triggers",
    "MetricTriggerQuery": "marmot.engine.models.triggers",
    "NotFound": "marmot.engine.errors",
    "PauseAutomation": "marmot.engine.models.actions",
    "PauseDeployment": "marmot.engine.models.actions",
    "PauseWorkPool": "marmot.engine.models.actions",
    "PauseWorkQueue": "marmot.engine.models.actions",
    "Posture": "marmot.engine.models.triggers",
    "PrefectDeploymentResolver": "marmot.deployment_ids",
    "PrefectMetric": "marmot.engine.models.triggers",
    "Publisher": "marmot.transport.publisher",
    "Replay": "marmot.engine.replay",
    "ResourceSpecification": "marmot.engine.models.resources",
    "ResumeAutomation": "marmot.engine.models.actions",
    "ResumeDeployment": "marmot.engine.models.actions",
    "ResumeFlowRun": "marmot.engine.models.actions",
    "ResumeWorkPool": "marmot.engine.models.actions",
    "ResumeWorkQueue": "marmot.engine.models.actions",
    "RunDeployment": "marmot.engine.models.actions",
    "Scenario": "marmot.engine.replay",
    "SendNotification": "marmot.engine.models.actions",
    "SequenceTrigger": "marmot.engine.models.triggers",
    "SuspendFlowRun": "marmot.engine.models.actions",
    "TriggerState": "marmot.engine.triggers.firing",
    "Unauthorized": "marmot.engine.errors",
    "ValidationFailed": "marmot.engine.errors",
    "apply_deployment_triggers": "marmot.deployments",
    "load_deployment_triggers": "marmot.deployments",
    "replay_scenario": "marmot.engine.replay",
}

if TYPE_CHECKING:
    from marmot.deployment_ids import PrefectDeploymentResolver
    from marmot.deployments import (
        DeploymentTriggers,
        apply_deployment_triggers,
        load_deployment_triggers,
    )
    from marmot.engine.errors import (
        Conflict,
        DaemonUnavailable,
        LimitExceeded,
        MarmotError,
        NotFound,
        Unauthorized,
        ValidationFailed,
    )
    from marmot.engine.models.actions import (
        CallWebhook,
        CancelFlowRun,
        ChangeFlowRunState,
        DeclareIncident,
        DeleteFlowRun,
        DoNothing,
        PauseAutomation,
        PauseDeployment,
        PauseWorkPool,
        PauseWorkQueue,
        ResumeAutomation,
        ResumeDeployment,
        ResumeFlowRun,
        ResumeWorkPool,
        ResumeWorkQueue,
        RunDeployment,
        SendNotification,
        SuspendFlowRun,
    )
    from marmot.engine.models.events import Event
    from marmot.engine.models.resources import ResourceSpecification
    from marmot.engine.models.triggers import (
        CompoundTrigger,
        EventTrigger,
        MetricTrigger,
        MetricTriggerOperator,
        MetricTriggerQuery,
        Posture,
        PrefectMetric,
        SequenceTrigger,
    )
    from marmot.engine.replay import Replay, Scenario, replay_scenario
    from marmot.engine.triggers.evaluator import Evaluator
    from marmot.engine.triggers.firing import Firing, TriggerState
    from marmot.sdk import Automation
    from marmot.transport.client import AsyncClient, Client
    from marmot.transport.publisher import Publisher

__all__ = [
    # automations and triggers
    "Automation",
    "CompoundTrigger",
    "EventTrigger",
    "MetricTrigger",
    "MetricTriggerOperator",
    "MetricTriggerQuery",
    "Posture",
    "PrefectMetric",
    "ResourceSpecification",
    "SequenceTrigger",
    # actions
    "CallWebhook",
    "CancelFlowRun",
    "ChangeFlowRunState",
    "DeclareIncident",
    "DeleteFlowRun",
    "DoNothing",
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
    "SuspendFlowRun",
    # talking to the daemon
    "AsyncClient",
    "Client",
    "Publisher",
    # prefect.yaml deployment triggers
    "DeploymentTriggers",
    "PrefectDeploymentResolver",
    "apply_deployment_triggers",
    "load_deployment_triggers",
    # events and evaluation
    "Evaluator",
    "Event",
    "Firing",
    "Replay",
    "Scenario",
    "TriggerState",
    "replay_scenario",
    # errors
    "Conflict",
    "DaemonUnavailable",
    "LimitExceeded",
    "MarmotError",
    "NotFound",
    "Unauthorized",
    "ValidationFailed",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'marmot' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
