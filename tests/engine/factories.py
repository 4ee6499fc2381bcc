"""Small builders for the engine rule tests: times, events, automations, evaluators.

Everything is deterministic: times are offsets from one fixed instant and
event ids are derived from the event's content unless given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.models.explain import BucketView
from marmot.engine.triggers.evaluator import Evaluator

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
"""The instant every test's times are counted from."""

AUTOMATION_ID = UUID("5e3a1c2b-0d4f-4a6b-8c9d-7e1f2a3b4c5d")

_EVENT_NAMESPACE = UUID("1d7c9e2a-4b6f-5a8c-9d0e-3f2a1b4c5d6e")


def at(seconds: float) -> datetime:
    """The time ``seconds`` after ``T0`` (2026-03-01T09:00:00Z); negative goes back."""
    return T0 + timedelta(seconds=seconds)


def event(
    name: str,
    t: float,
    resource_id: str = "r",
    labels: Mapping[str, str] | None = None,
    related: Sequence[Mapping[str, str]] | None = None,
    id: UUID | str | None = None,
    follows: UUID | str | None = None,
    received: float | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Event:
    """An event named ``name`` that occurred at ``at(t)`` on resource ``resource_id``.

    ``labels`` are extra labels of the primary resource, ``related`` the related
    resources as label maps, ``received`` seconds after ``T0``, ``payload`` the
    payload (empty by default). Without ``id``, the id is derived from
    everything else, so the same call gives the same id.
    """
    resource = {"prefect.resource.id": resource_id, **(labels or {})}
    related_list = [dict(r) for r in related or []]
    if id is None:
        seed = f"{name}|{t}|{sorted(resource.items())}|{related_list}|{follows}|{received}"
        if payload:
            seed += f"|{sorted(payload.items())}"
        id = uuid5(_EVENT_NAMESPACE, seed)
    return Event.model_validate(
        {
            "id": str(id),
            "occurred": at(t),
            "event": name,
            "resource": resource,
            "related": related_list,
            "payload": dict(payload or {}),
            "follows": str(follows) if follows is not None else None,
            "received": at(received) if received is not None else None,
        }
    )


def automation(trigger: dict[str, Any], **kw: Any) -> Automation:
    """An automation with ``trigger`` and a do-nothing action; ``kw`` overrides any field."""
    document: dict[str, Any] = {
        "id": str(AUTOMATION_ID),
        "name": "marmot-test",
        "trigger": trigger,
        "actions": [{"type": "do-nothing"}],
    }
    document.update(kw)
    return Automation.model_validate(document)


def evaluator(trigger: dict[str, Any], **kw: Any) -> Evaluator:
    """An ``Evaluator`` of ``automation(trigger, **kw)``."""
    return Evaluator(automation(trigger, **kw))


def buckets(ev: Evaluator, path: str = "trigger") -> list[BucketView]:
    """The open buckets of the event trigger at ``path``, as ``explain()`` reports them."""
    for view in ev.explain().triggers:
        if view.path == path:
            return view.buckets
    raise KeyError(path)
