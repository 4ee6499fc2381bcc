"""Marmot renders Prefect's notification templates as Prefect does.

Each case renders one template twice over the same objects: with Prefect's own
template code (``prefect.server.utilities.user_templates`` over Prefect's server
models, validated from the API JSON as Prefect's actions do) and with Marmot's
(``render`` over ``build_context`` of the same JSON), and compares the strings.
The ``prefect`` package is a test-only dependency.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.templates import build_context, render

pytest.importorskip("prefect")

from prefect.server.events.schemas.automations import Automation as PrefectAutomation
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.server.schemas.core import Flow, WorkPool
from prefect.server.schemas.responses import (
    DeploymentResponse,
    FlowRunResponse,
    WorkQueueWithStatus,
)
from prefect.server.utilities.user_templates import render_user_template

FLOW_RUN_ID = UUID("0f2a9c1e-5b7d-4e3a-9c1e-2d4f6a8b0c1d")
FLOW_ID = UUID("1b3c5d7e-9f0a-4b2c-8d4e-6f8a0b2c4d6e")
DEPLOYMENT_ID = UUID("2c4d6e8f-0a1b-4c3d-9e5f-7a9b1c3d5e7f")
WORK_QUEUE_ID = UUID("3d5e7f9a-1b2c-4d4e-8f6a-8b0c2d4e6f8a")
WORK_POOL_ID = UUID("6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c")
EVENT_ID = UUID("4e6f8a0b-2c3d-4e5f-9a7b-9c1d3e5f7a9b")
AUTOMATION_ID = UUID("5e3a1c2b-0d4f-4a6b-8c9d-7e1f2a3b4c5d")
STARTED = datetime(2026, 12, 6, 13, 44, 29, 123456, tzinfo=UTC)
ON_THE_SECOND = datetime(2026, 12, 6, 13, 45, 0, tzinfo=UTC)


def _flow_run() -> dict[str, Any]:
    model = FlowRunResponse.model_validate(
        {
            "id": FLOW_RUN_ID,
            "name": "crimson-otter",
            "flow_id": FLOW_ID,
            "deployment_id": DEPLOYMENT_ID,
            "work_queue_id": WORK_QUEUE_ID,
            "work_queue_name": "default",
            "work_pool_id": WORK_POOL_ID,
            "work_pool_name": "k8s",
            "created": STARTED - timedelta(seconds=5),
            "updated": ON_THE_SECOND,
            "state_type": "FAILED",
            "state_name": "Failed",
            "state": {
                "type": "FAILED",
                "name": "Failed",
                "message": "Flow run encountered an exception: ValueError('boom')",
                "timestamp": ON_THE_SECOND,
                "state_details": {"flow_run_id": FLOW_RUN_ID, "scheduled_time": STARTED},
            },
            "expected_start_time": STARTED,
            "start_time": STARTED,
            "end_time": ON_THE_SECOND,
            "total_run_time": timedelta(microseconds=45395),
            "estimated_run_time": timedelta(seconds=30, microseconds=877),
            "run_count": 2,
            "tags": ["etl", "nightly"],
            "parameters": {"day": "2026-12-06", "retries": 3},
        }
    )
    return model.model_dump(mode="json")


def _flow() -> dict[str, Any]:
    return Flow.model_validate(
        {"id": FLOW_ID, "name": "etl", "tags": ["data"], "created": STARTED}
    ).model_dump(mode="json")


def _deployment() -> dict[str, Any]:
    return DeploymentResponse.model_validate(
        {
            "id": DEPLOYMENT_ID,
            "name": "nightly",
            "flow_id": FLOW_ID,
            "status": "READY",
            "paused": False,
            "version": "1.4",
            "description": "The nightly load",
            "tags": ["prod"],
            "work_pool_name": "k8s",
            "work_queue_name": "default",
            "last_polled": ON_THE_SECOND,
            "created": STARTED,
            "updated": ON_THE_SECOND,
            "parameters": {"day": "today"},
        }
    ).model_dump(mode="json")


def _work_pool() -> dict[str, Any]:
    return WorkPool.model_validate(
        {
            "id": WORK_POOL_ID,
            "name": "k8s",
            "type": "kubernetes",
            "status": "NOT_READY",
            "is_paused": False,
            "concurrency_limit": 5,
            "default_queue_id": WORK_QUEUE_ID,
            "created": STARTED,
            "updated": ON_THE_SECOND,
        }
    ).model_dump(mode="json")


def _work_queue() -> dict[str, Any]:
    return WorkQueueWithStatus.model_validate(
        {
            "id": WORK_QUEUE_ID,
            "name": "default",
            "work_pool_id": WORK_POOL_ID,
            "status": "PAUSED",
            "is_paused": True,
            "priority": 1,
            "last_polled": STARTED,
            "created": STARTED,
            "healthy": False,
            "health_check_policy": {
                "maximum_late_runs": 0,
                "maximum_seconds_since_last_polled": 60,
            },
        }
    ).model_dump(mode="json")


EVENT_JSON: dict[str, Any] = {
    "id": str(EVENT_ID),
    "occurred": STARTED.isoformat(),
    "received": ON_THE_SECOND.isoformat(),
    "event": "prefect.flow-run.Failed",
    "resource": {
        "prefect.resource.id": f"prefect.flow-run.{FLOW_RUN_ID}",
        "prefect.resource.name": "crimson-otter",
        "prefect.state-type": "FAILED",
    },
    "related": [
        {
            "prefect.resource.id": f"prefect.flow.{FLOW_ID}",
            "prefect.resource.role": "flow",
            "prefect.resource.name": "etl",
        },
        {
            "prefect.resource.id": f"prefect.deployment.{DEPLOYMENT_ID}",
            "prefect.resource.role": "deployment",
            "prefect.resource.name": "nightly",
        },
    ],
    "payload": {"intended": {"from": "RUNNING", "to": "FAILED"}, "validated_state": "x"},
}

AUTOMATION_JSON: dict[str, Any] = {
    "id": str(AUTOMATION_ID),
    "name": "etl failures",
    "description": "Tell the team when the nightly load fails",
    "enabled": True,
    "tags": ["data"],
    "trigger": {
        "type": "event",
        "expect": ["prefect.flow-run.Failed"],
        "posture": "Reactive",
        "threshold": 1,
        "within": 0,
    },
    "actions": [{"type": "do-nothing"}],
}

OBJECTS = {
    "flow_run": (_flow_run, FlowRunResponse),
    "flow": (_flow, Flow),
    "deployment": (_deployment, DeploymentResponse),
    "work_pool": (_work_pool, WorkPool),
    "work_queue": (_work_queue, WorkQueueWithStatus),
}


def prefect_render(template: str) -> str:
    context: dict[str, Any] = {
        "automation": PrefectAutomation.model_validate(AUTOMATION_JSON),
        "event": ReceivedEvent.model_validate(EVENT_JSON),
    }
    for name, (make, model) in OBJECTS.items():
        context[name] = model.model_validate(make())
    return asyncio.run(render_user_template(template, context))


def marmot_render(template: str) -> str:
    objects = {name: make() for name, (make, _) in OBJECTS.items()}
    context = build_context(
        Event.model_validate(EVENT_JSON),
        Automation.model_validate(AUTOMATION_JSON),
        objects,
        None,
    )
    return render(template, context, max_bytes=100_000, deadline_s=5.0, now=lambda: 0.0)


TEMPLATES = {
    # Prefect's documented notification templates and the fields they quote.
    "flow run": (
        "Flow run {{ flow_run.name }} entered state {{ flow_run.state.name }}.\n"
        "Timestamp: {{ flow_run.state.timestamp }}\n"
        "Flow ID: {{ flow_run.flow_id }}\n"
        "Flow Run ID: {{ flow_run.id }}\n"
        "State message: {{ flow_run.state.message }}"
    ),
    "flow run state type": "{{ flow_run.state.type }} / {{ flow_run.state_type }}",
    "flow run state": "{{ flow_run.state }}",
    "flow run times": (
        "{{ flow_run.start_time }} {{ flow_run.end_time }} {{ flow_run.expected_start_time }} "
        "{{ flow_run.created }} {{ flow_run.updated }} {{ flow_run.next_scheduled_start_time }}"
    ),
    "flow run durations": (
        "{{ flow_run.total_run_time }} {{ flow_run.estimated_run_time }} "
        "{{ flow_run.estimated_start_time_delta }}"
    ),
    "flow run values": (
        "{{ flow_run.tags }} {{ flow_run.parameters }} {{ flow_run.run_count }} "
        "{{ flow_run.work_queue_name }} {{ flow_run.deployment_id }} {{ flow_run.state_id }}"
    ),
    "flow run comparisons": (
        "{% if flow_run.state.type == 'FAILED' %}failed{% endif %} "
        "{{ flow_run.state.type.value }} {{ flow_run.state.type.name }} "
        "{{ flow_run.start_time.year }} {{ flow_run.start_time.strftime('%H:%M:%S') }} "
        "{{ flow_run.total_run_time.total_seconds() }} "
        "{{ flow_run.state.state_details.scheduled_time }} "
        "{{ flow_run.state.state_details.flow_run_id }}"
    ),
    "flow": "Flow {{ flow.name }} ({{ flow.id }}) created {{ flow.created }} tags {{ flow.tags }}",
    "deployment": (
        "{{ deployment.name }} v{{ deployment.version }}: {{ deployment.status }}, "
        "paused={{ deployment.paused }}, polled {{ deployment.last_polled }}, "
        "{{ deployment.description }} {{ deployment.tags }} {{ deployment.parameters }} "
        "{{ deployment.work_pool_name }}/{{ deployment.work_queue_name }} {{ deployment.flow_id }}"
    ),
    "work pool": (
        "Work pool {{ work_pool.name }} ({{ work_pool.type }}) is {{ work_pool.status }}; "
        "limit {{ work_pool.concurrency_limit }}, paused {{ work_pool.is_paused }}, "
        "since {{ work_pool.updated }}"
    ),
    "work queue": (
        "Work queue {{ work_queue.name }} is {{ work_queue.status }} "
        "(priority {{ work_queue.priority }}, last polled {{ work_queue.last_polled }}, "
        "pool {{ work_queue.work_pool_id }})"
    ),
    "automation": (
        "{{ automation.name }}: {{ automation.description }} ({{ automation.id }}) "
        "enabled={{ automation.enabled }}"
    ),
    "event": (
        "{{ event.event }} at {{ event.occurred }} on {{ event.resource.id }} "
        "({{ event.resource.name }}); id {{ event.id }}; "
        "{{ event.resource['prefect.state-type'] }} {{ event.payload.intended.to }}"
    ),
    "event resources": "{{ event.resource }} {{ event.related }} {{ event.related[1] }}",
    "event related": (
        "{% for r in event.related %}{{ r.role }}={{ r.name }} {% endfor %}{{ event.received }}"
    ),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_marmot_renders_the_template_as_prefect_does(name: str) -> None:
    template = TEMPLATES[name]
    assert marmot_render(template) == prefect_render(template)


def test_the_issues_examples() -> None:
    assert marmot_render("{{ flow_run.state.type }}") == "StateType.FAILED"
    assert marmot_render("{{ flow_run.start_time }}") == "2026-12-06 13:44:29.123456+00:00"
    assert marmot_render("{{ flow_run.total_run_time }}") == "0:00:00.045395"


def test_tojson_still_gives_the_apis_json() -> None:
    rendered = marmot_render("{{ flow_run.state | tojson }}")
    assert '"type": "FAILED"' in rendered
    assert (
        marmot_render("{{ flow_run.start_time | tojson }}") == '"2026-12-06T13:44:29.123456+00:00"'
    )
