"""Marmot: Prefect automations as a standalone, actor-based rules engine.

The public API: the automation, trigger and action schemas (Prefect's shape),
the clients, events, the replay engine, and the error hierarchy.
"""

__version__ = "0.1.0"

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
from marmot.engine.evaluator import Evaluator
from marmot.engine.firing import Firing, TriggerState
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
from marmot.sdk import Automation
from marmot.transport.client import AsyncClient, Client, Publisher

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
