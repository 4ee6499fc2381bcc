"""What templates see: read-only views of an event, its resources and labels, and an
automation, plus the orchestrator objects Prefect lends templates, gathered by
:func:`build_context` into the :class:`TemplateContext` a render takes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from marmot.engine.models.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event
from marmot.engine.templates.prefect_values import object_spec, prefect_value

if TYPE_CHECKING:
    from marmot.engine.models.automations import Automation

__all__ = [
    "OBJECT_NAMES",
    "AutomationView",
    "EventView",
    "LabelDiver",
    "ResourceView",
    "TemplateContext",
    "build_context",
    # for the sandbox's size checks and filters
    "View",
    "api_object_kind",
]

OBJECT_NAMES = ("flow_run", "flow", "deployment", "work_pool", "work_queue")
"""The orchestrator objects a template may use, loaded only when it names them."""

_OBJECT_KINDS = {
    "flow_run": "flow-run",
    "flow": "flow",
    "deployment": "deployment",
    "work_pool": "work-pool",
    "work_queue": "work-queue",
}


class View:
    """A read-only, template-facing view with a plain-data form (for ``tojson`` and sizes).

    ``_data`` is underscored so the sandbox hides it from templates, not from Marmot.
    """

    __slots__ = ()

    def _data(self) -> Any:
        raise NotImplementedError

    def __str__(self) -> str:
        return str(self._data())

    def __repr__(self) -> str:
        return str(self)


class LabelDiver(View):
    """Labels reachable as attributes: ``labels.prefect.resource.id`` dives through the dots.

    As in Prefect, iterating gives ``(label, value)`` pairs and the diver prints
    as the value of the label it stands for (empty at the top).
    """

    __slots__ = ("_labels", "_value")

    def __init__(self, labels: Mapping[str, str], value: str = "") -> None:
        self._labels = dict(labels)
        self._value = value

    def __getattr__(self, name: str) -> LabelDiver:
        if name.startswith("_"):
            raise AttributeError(name)
        prefix = f"{name}."
        deeper = {k[len(prefix) :]: v for k, v in self._labels.items() if k.startswith(prefix)}
        value = self._labels.get(name)
        if value is None and not deeper:
            raise AttributeError(name)
        return LabelDiver(deeper, value or "")

    def __getitem__(self, label: str) -> str:
        return self._labels[label]

    def __contains__(self, label: object) -> bool:
        return label in self._labels

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._labels.items())

    def __len__(self) -> int:
        return len(self._labels)

    def __str__(self) -> str:
        return self._value

    def _data(self) -> dict[str, str]:
        return dict(self._labels)


class ResourceView(View):
    """A resource's labels: ``.id``, ``.name``, ``.role``, ``['label']``, ``.get(label)``.

    Iterating gives ``(label, value)`` pairs, so ``{% for label, value in
    event.resource %}`` works. ``.role`` of a resource without one is undefined
    (renders empty), as in Prefect, where only related resources have a role.
    It prints as Prefect's resource models do: ``root={...}``, and inside a list
    ``RelatedResource(root={...})``.
    """

    __slots__ = ("_labels", "_model")

    def __init__(self, labels: Mapping[str, str], *, is_related: bool = False) -> None:
        self._labels = labels
        self._model = "RelatedResource" if is_related else "Resource"

    def __str__(self) -> str:
        return f"root={dict(self._labels)!r}"

    def __repr__(self) -> str:
        return f"{self._model}(root={dict(self._labels)!r})"

    @property
    def id(self) -> str:
        """The ``prefect.resource.id`` label."""
        return self._labels[RESOURCE_ID]

    @property
    def name(self) -> str | None:
        """The ``prefect.resource.name`` label, or None."""
        return self._labels.get(RESOURCE_NAME)

    @property
    def role(self) -> str:
        """The ``prefect.resource.role`` label (related resources)."""
        role = self._labels.get(RESOURCE_ROLE)
        if role is None:
            raise AttributeError("role")
        return role

    @property
    def labels(self) -> LabelDiver:
        """The labels, reachable as attributes through their dotted names."""
        return LabelDiver(self._labels)

    def get(self, label: str, default: str | None = None) -> str | None:
        """The label's value, or ``default``."""
        return self._labels.get(label, default)

    def keys(self) -> list[str]:
        """The label names."""
        return list(self._labels)

    def values(self) -> list[str]:
        """The label values."""
        return list(self._labels.values())

    def items(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs."""
        return list(self._labels.items())

    def __getitem__(self, label: str) -> str:
        return self._labels[label]

    def __contains__(self, label: object) -> bool:
        return label in self._labels

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._labels.items())

    def __len__(self) -> int:
        return len(self._labels)

    def _data(self) -> dict[str, str]:
        return dict(self._labels)


class EventView(View):
    """An event in Prefect's shape; ``related`` is a list of :class:`ResourceView`."""

    __slots__ = ("_dump", "_event", "_related", "_resource")

    def __init__(self, event: Event) -> None:
        self._event = event
        self._resource = ResourceView(event.resource)
        self._related = [ResourceView(labels, is_related=True) for labels in event.related]
        self._dump: dict[str, Any] | None = None

    @property
    def id(self) -> UUID:
        """The event's id."""
        return self._event.id

    @property
    def occurred(self) -> Any:
        """When it happened (a UTC ``datetime``)."""
        return self._event.occurred

    @property
    def event(self) -> str:
        """The event's name, e.g. ``prefect.flow-run.Failed``."""
        return self._event.event

    @property
    def resource(self) -> ResourceView:
        """The primary resource."""
        return self._resource

    @property
    def related(self) -> list[ResourceView]:
        """The related resources, in order."""
        return self._related

    @property
    def payload(self) -> dict[str, Any]:
        """The payload (the sandbox refuses changes to it)."""
        return self._event.payload

    @property
    def follows(self) -> UUID | None:
        """The id of the event this one follows, or None."""
        return self._event.follows

    @property
    def received(self) -> Any:
        """When Marmot accepted the event, or None."""
        return self._event.received

    def _data(self) -> dict[str, Any]:
        if self._dump is None:
            self._dump = self._event.model_dump(mode="json")
        return self._dump


class AutomationView(View):
    """An automation: ``id``, ``name``, ``description``, ``enabled``, ``tags`` and its
    ``trigger`` and actions as plain data."""

    __slots__ = ("_automation", "_dump")

    def __init__(self, automation: Automation) -> None:
        self._automation = automation
        self._dump: dict[str, Any] | None = None

    @property
    def id(self) -> UUID:
        """The automation's id."""
        return self._automation.id

    @property
    def name(self) -> str:
        """The automation's name."""
        return self._automation.name

    @property
    def description(self) -> str:
        """The automation's description."""
        return self._automation.description

    @property
    def enabled(self) -> bool:
        """Whether the automation is enabled."""
        return self._automation.enabled

    @property
    def tags(self) -> list[str]:
        """The automation's tags."""
        tags: list[str] = self._data()["tags"]
        return tags

    @property
    def trigger(self) -> dict[str, Any]:
        """The trigger, as JSON-style data."""
        trigger: dict[str, Any] = self._data()["trigger"]
        return trigger

    @property
    def actions(self) -> list[dict[str, Any]]:
        """The actions, as JSON-style data."""
        actions: list[dict[str, Any]] = self._data()["actions"]
        return actions

    @property
    def actions_on_trigger(self) -> list[dict[str, Any]]:
        """The actions run when the trigger fires (``actions_on_trigger``)."""
        actions: list[dict[str, Any]] = self._data()["actions_on_trigger"]
        return actions

    @property
    def actions_on_resolve(self) -> list[dict[str, Any]]:
        """The actions run when the trigger resolves (``actions_on_resolve``)."""
        actions: list[dict[str, Any]] = self._data()["actions_on_resolve"]
        return actions

    def _data(self) -> dict[str, Any]:
        if self._dump is None:
            self._dump = self._automation.model_dump(mode="json")
        return self._dump


class _ApiObject(dict[str, Any]):
    """An orchestrator object (the API's JSON), tagged with its kind for ``ui_url``.

    Fields read in a template come back as Prefect's models hold them (times,
    durations, state types; see ``prefect_values``); ``tojson`` and ``.get``
    still see the JSON.
    """

    __slots__ = ("_kind", "_spec")

    def __init__(self, kind: str, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self._kind = kind
        self._spec = object_spec(kind)

    def __getitem__(self, key: str) -> Any:
        return prefect_value(self._spec, key, super().__getitem__(key))


def api_object_kind(value: object) -> str | None:
    """The kind (``flow-run``, ``work-pool``...) of an orchestrator object from
    :func:`build_context`, or None for any other value."""
    return value._kind if isinstance(value, _ApiObject) else None


@dataclass(frozen=True, slots=True)
class TemplateContext:
    """The variables a template renders with, and the UI address its links point to."""

    variables: Mapping[str, Any]
    ui_url: str | None = None


def build_context(
    event: Event | None,
    automation: Automation,
    objects: Mapping[str, Mapping[str, Any]],
    ui_url: str | None,
    *,
    labels: Mapping[str, str] | None = None,
    metric: Mapping[str, Any] | None = None,
) -> TemplateContext:
    """The context Prefect gives an action's templates.

    ``objects`` maps names in :data:`OBJECT_NAMES` to the orchestrator's JSON
    for them; names left out are undefined in the template. ``labels`` are the
    firing's labels (Prefect's ``labels``). ``metric`` is a metric trigger's
    reading when it fired (``name``, ``operator``, ``threshold``, ``value``),
    Marmot's addition so a notification can quote them. Raises ``ValueError``
    for an unknown object name.
    """
    variables: dict[str, Any] = {"automation": AutomationView(automation)}
    if event is not None:
        variables["event"] = EventView(event)
    if labels is not None:
        variables["labels"] = LabelDiver(labels)
    if metric is not None:
        variables["metric"] = dict(metric)
    for name, data in objects.items():
        kind = _OBJECT_KINDS.get(name)
        if kind is None:
            raise ValueError(f"unknown template object {name!r}; expected one of {OBJECT_NAMES}")
        variables[name] = _ApiObject(kind, data)
    return TemplateContext(variables, ui_url)
