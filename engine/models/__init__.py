"""Pydantic schemas for events, triggers, actions and automations, in Prefect's shape."""

from marmot.engine.models.actions import ACTION_TYPES, ActionTypes, parse_action
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event, EventLimits
from marmot.engine.models.explain import BucketView, Explanation, MetricView, TriggerView
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
    Trigger,
    TriggerTypes,
)

__all__ = [
    "ACTION_TYPES",
    "ActionTypes",
    "Automation",
    "BucketView",
    "CompoundTrigger",
    "Event",
    "EventLimits",
    "EventTrigger",
    "Explanation",
    "MetricTrigger",
    "MetricTriggerOperator",
    "MetricTriggerQuery",
    "MetricView",
    "Posture",
    "PrefectMetric",
    "ResourceSpecification",
    "SequenceTrigger",
    "Trigger",
    "TriggerTypes",
    "TriggerView",
    "parse_action",
]
