"""Trigger schemas: ``event``, ``metric``, ``compound`` and ``sequence`` (SEMANTICS §3-4).

They accept Prefect's automation JSON and YAML unchanged: sets given as
lists, ``within`` as seconds, an ISO 8601 duration or ``HH:MM:SS``, and
``posture`` optional (Reactive, or Metric for a metric trigger), as in
Prefect's Python SDK. How metric triggers evaluate is in ``engine.metric``.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from math import isfinite
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    Discriminator,
    Field,
    Tag,
    field_serializer,
    field_validator,
    model_validator,
)

from marmot.engine.models._base import MarmotModel
from marmot.engine.models.resources import ResourceSpecification

# SEMANTICS §3: Proactive triggers need a window of at least 10 s.
MIN_PROACTIVE_WITHIN = timedelta(seconds=10)
# Bounds that keep every automation storable and its deadlines on the calendar:
# deeper trees do not read back from JSON; longer windows end past year 9999.
MAX_TRIGGER_DEPTH = 20
MAX_WITHIN = timedelta(days=3650)
# Prefect's schema: a metric's lookback and breach duration are at least 5 minutes.
MIN_METRIC_SPAN = timedelta(seconds=300)


class Posture(StrEnum):
    """Whether a trigger fires on events that happened, on ones that did not,
    or on a metric of flow runs (metric triggers only)."""

    Reactive = "Reactive"
    Proactive = "Proactive"
    Metric = "Metric"


class _Trigger(MarmotModel):
    # Prefect gives every trigger an id; Marmot identifies triggers by their
    # position in the tree, but keeps a supplied id so documents round-trip.
    id: UUID | None = None


class EventTrigger(_Trigger):
    """Counts matching events in windows, per ``for_each`` key (SEMANTICS §3)."""

    type: Literal["event"] = "event"
    match: ResourceSpecification = Field(default_factory=ResourceSpecification)
    match_related: ResourceSpecification | list[ResourceSpecification] = Field(default_factory=list)
    after: set[str] = Field(default_factory=set)
    expect: set[str] = Field(default_factory=set)
    for_each: set[str] = Field(default_factory=set)
    posture: Posture = Posture.Reactive
    threshold: int = Field(default=1, ge=0)
    within: timedelta = Field(default=timedelta(0), ge=timedelta(0), le=MAX_WITHIN)

    @field_validator("after", "expect", "for_each", mode="before")
    @classmethod
    def _single_string_is_a_set(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_serializer("after", "expect", "for_each")
    def _sorted(self, value: set[str]) -> list[str]:
        # Sorted, so a document reads the same in every process (set order
        # follows the hash seed) and checkpoints recognise their automation.
        return sorted(value)

    @model_validator(mode="after")
    def _proactive_window(self) -> EventTrigger:
        if self.posture is Posture.Metric:
            raise ValueError(
                "posture 'Metric' belongs to metric triggers (type: metric); "
                "an event trigger is Reactive or Proactive"
            )
        if self.posture is Posture.Proactive:
            if self.within == timedelta(0):
                self.within = MIN_PROACTIVE_WITHIN
            elif self.within < MIN_PROACTIVE_WITHIN:
                raise ValueError(
                    "a Proactive trigger's within must be at least 10 seconds "
                    f"(got {self.within.total_seconds():g} s)"
                )
        return self

    @property
    def related_specs(self) -> list[ResourceSpecification]:
        """``match_related`` as a list of specifications."""
        return _as_specs(self.match_related)

    @property
    def immediate(self) -> bool:
        """Reactive with no window: every matching event counts at once."""
        return self.posture is Posture.Reactive and self.within == timedelta(0)


def _as_specs(
    match_related: ResourceSpecification | list[ResourceSpecification],
) -> list[ResourceSpecification]:
    if isinstance(match_related, ResourceSpecification):
        return [match_related] if match_related else []
    return list(match_related)


class PrefectMetric(StrEnum):
    """The flow-run metrics a metric trigger can watch (Prefect's names)."""

    lateness = "lateness"
    duration = "duration"
    successes = "successes"


class MetricTriggerOperator(StrEnum):
    """How a metric's value is compared with its threshold."""

    LT = "<"
    LTE = "<="
    GT = ">"
    GTE = ">="


class MetricTriggerQuery(MarmotModel):
    """Which metric to compute, over what lookback, and when it breaches."""

    name: PrefectMetric
    threshold: float
    operator: MetricTriggerOperator
    range: timedelta = Field(default=MIN_METRIC_SPAN, le=MAX_WITHIN)
    firing_for: timedelta = Field(default=MIN_METRIC_SPAN, le=MAX_WITHIN)

    @field_validator("name", mode="before")
    @classmethod
    def _known_metric(cls, value: Any) -> Any:
        known = [m.value for m in PrefectMetric]
        if isinstance(value, PrefectMetric) or value in known:
            return value
        raise ValueError(
            f"unknown metric {value!r}: Marmot evaluates "
            + ", ".join(repr(name) for name in sorted(known))
        )

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not isfinite(value):
            raise ValueError("the threshold must be a finite number")
        return value

    @field_validator("range", "firing_for")
    @classmethod
    def _at_least_five_minutes(cls, value: timedelta) -> timedelta:
        if value < MIN_METRIC_SPAN:
            raise ValueError(
                f"must be at least 300 seconds (5 minutes); got {value.total_seconds():g} s"
            )
        return value


class MetricTrigger(_Trigger):
    """Fires when a flow-run metric breaches its threshold for ``firing_for``
    (see ``engine.metric`` for how it is computed)."""

    type: Literal["metric"] = "metric"
    match: ResourceSpecification = Field(default_factory=ResourceSpecification)
    match_related: ResourceSpecification | list[ResourceSpecification] = Field(default_factory=list)
    posture: Posture = Posture.Metric
    metric: MetricTriggerQuery

    @field_validator("posture")
    @classmethod
    def _metric_posture(cls, value: Posture) -> Posture:
        if value is not Posture.Metric:
            raise ValueError(f"a metric trigger's posture is 'Metric', not {value.value!r}")
        return value

    @property
    def related_specs(self) -> list[ResourceSpecification]:
        """``match_related`` as a list of specifications."""
        return _as_specs(self.match_related)


class _CompositeTrigger(_Trigger):
    triggers: list[TriggerTypes] = Field(min_length=1)
    within: timedelta | None = Field(default=None, ge=timedelta(0), le=MAX_WITHIN)

    @model_validator(mode="after")
    def _not_too_deep(self) -> _CompositeTrigger:
        depth = trigger_depth(self)
        if depth > MAX_TRIGGER_DEPTH:
            raise ValueError(
                f"triggers are nested {depth} levels deep; at most {MAX_TRIGGER_DEPTH} are allowed"
            )
        return self

    @property
    def needed_firings(self) -> int:
        """How many child firings the parent waits for (SEMANTICS §4)."""
        return len(self.triggers)


class CompoundTrigger(_CompositeTrigger):
    """Fires when ``require`` of its children (any, all or N) have fired."""

    type: Literal["compound"] = "compound"
    require: int | Literal["any", "all"] = "all"

    @model_validator(mode="after")
    def _require_in_range(self) -> CompoundTrigger:
        if isinstance(self.require, int) and not 1 <= self.require <= len(self.triggers):
            raise ValueError(
                f"require must be 'any', 'all' or a number from 1 to {len(self.triggers)} "
                f"(the number of child triggers); got {self.require}"
            )
        return self

    @property
    def needed_firings(self) -> int:
        if self.require == "any":
            return 1
        if self.require == "all":
            return len(self.triggers)
        return self.require


class SequenceTrigger(_CompositeTrigger):
    """Fires when all of its children have fired in the declared order."""

    type: Literal["sequence"] = "sequence"


def trigger_depth(trigger: _Trigger) -> int:
    """Levels of triggers, counting this one (an event trigger is 1)."""
    if isinstance(trigger, _CompositeTrigger):
        return 1 + max(trigger_depth(child) for child in trigger.triggers)
    return 1


def _trigger_tag(value: Any) -> str:
    # Prefect's SDK lets a trigger omit `type` and tells it by its fields:
    # `posture: Metric` makes a metric trigger, child `triggers` with
    # `require` a compound trigger, child `triggers` alone a sequence,
    # anything else an event trigger.
    if isinstance(value, dict):
        if "type" in value:
            return str(value["type"])
        if value.get("posture") == Posture.Metric.value:
            return "metric"
        if "triggers" in value:
            return "compound" if "require" in value else "sequence"
        return "event"
    return str(getattr(value, "type", "event"))


TriggerTypes = Annotated[
    Annotated[EventTrigger, Tag("event")]
    | Annotated[MetricTrigger, Tag("metric")]
    | Annotated[CompoundTrigger, Tag("compound")]
    | Annotated[SequenceTrigger, Tag("sequence")],
    Discriminator(
        _trigger_tag,
        custom_error_type="invalid_trigger_type",
        custom_error_message=(
            "trigger type must be one of 'event', 'metric', 'compound', 'sequence'"
        ),
    ),
]
Trigger = EventTrigger | MetricTrigger | CompoundTrigger | SequenceTrigger
CompositeTrigger = CompoundTrigger | SequenceTrigger

CompoundTrigger.model_rebuild()
SequenceTrigger.model_rebuild()


def iter_event_triggers(trigger: Trigger) -> list[EventTrigger]:
    """Every event trigger in the tree, depth first, in declared order."""
    if isinstance(trigger, EventTrigger):
        return [trigger]
    if isinstance(trigger, MetricTrigger):
        return []
    found: list[EventTrigger] = []
    for child in trigger.triggers:
        found.extend(iter_event_triggers(child))
    return found


def iter_metric_triggers(trigger: Trigger) -> list[MetricTrigger]:
    """Every metric trigger in the tree, depth first, in declared order."""
    if isinstance(trigger, MetricTrigger):
        return [trigger]
    if isinstance(trigger, EventTrigger):
        return []
    found: list[MetricTrigger] = []
    for child in trigger.triggers:
        found.extend(iter_metric_triggers(child))
    return found


def has_proactive(trigger: Trigger) -> bool:
    """True when any event trigger in the tree is Proactive."""
    return any(t.posture is Posture.Proactive for t in iter_event_triggers(trigger))
