"""The documents the console's automation form starts from, one per kind of
automation Prefect's UI offers: state changes of flow runs, work pools, work
queues and deployments, a metric threshold, an incident declaration and a
custom event. Each is a valid automation as it stands (its action does
nothing), for the user to edit before saving.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

__all__ = ["STARTERS", "Starter", "starter_document"]

_EACH = ["prefect.resource.id"]


@dataclass(frozen=True, slots=True)
class Starter:
    """One template: its key in URLs, its title and its document."""

    key: str
    title: str
    document: dict[str, Any]


def _event_trigger(resource: str, expect: list[str], **more: Any) -> dict[str, Any]:
    return {
        "type": "event",
        "posture": "Reactive",
        "match": {"prefect.resource.id": resource},
        "expect": expect,
        "for_each": _EACH,
        "threshold": 1,
        "within": 0,
        **more,
    }


def _automation(name: str, description: str, trigger: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "enabled": True,
        "trigger": trigger,
        "actions": [{"type": "do-nothing"}],
    }


STARTERS: tuple[Starter, ...] = (
    Starter(
        "flow-run-state",
        "Flow run state change",
        _automation(
            "flow run failed",
            "A flow run entered Failed or Crashed.",
            _event_trigger(
                "prefect.flow-run.*", ["prefect.flow-run.Failed", "prefect.flow-run.Crashed"]
            ),
        ),
    ),
    Starter(
        "work-pool-status",
        "Work pool status",
        _automation(
            "work pool not ready",
            "A work pool stopped being ready.",
            _event_trigger("prefect.work-pool.*", ["prefect.work-pool.not-ready"]),
        ),
    ),
    Starter(
        "work-queue-status",
        "Work queue status",
        _automation(
            "work queue not ready",
            "A work queue stopped being ready.",
            _event_trigger("prefect.work-queue.*", ["prefect.work-queue.not-ready"]),
        ),
    ),
    Starter(
        "deployment-status",
        "Deployment status",
        _automation(
            "deployment not ready",
            "A deployment stopped being ready.",
            _event_trigger("prefect.deployment.*", ["prefect.deployment.not-ready"]),
        ),
    ),
    Starter(
        "metric-threshold",
        "Metric threshold",
        _automation(
            "flow runs slow",
            "Flow runs of a deployment took over 10 minutes on average for 5 minutes.",
            {
                "type": "metric",
                "match": {"prefect.resource.id": "prefect.deployment.*"},
                "metric": {
                    "name": "duration",
                    "operator": ">",
                    "threshold": 600,
                    "range": 300,
                    "firing_for": 300,
                },
            },
        ),
    ),
    Starter(
        "incident-declaration",
        "Incident declaration",
        {
            **_automation(
                "declare an incident",
                "Three failed flow runs within ten minutes declare an incident.",
                _event_trigger(
                    "prefect.flow-run.*", ["prefect.flow-run.Failed"], threshold=3, within=600
                ),
            ),
            "actions": [{"type": "declare-incident"}],
        },
    ),
    Starter(
        "custom-event",
        "Custom event",
        _automation(
            "custom event",
            "An event of your own, once per resource.",
            _event_trigger("*", ["my.custom.event"]),
        ),
    ),
)


def starter_document(key: str) -> dict[str, Any] | None:
    """A fresh copy of the template ``key``'s document, or None for an unknown key."""
    for starter in STARTERS:
        if starter.key == key:
            return copy.deepcopy(starter.document)
    return None
