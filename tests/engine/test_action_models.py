"""Tests for the automation action models and the ``type``-discriminated union."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from marmot.engine.models.actions import (
    ACTION_TYPES,
    DEFAULT_NOTIFICATION_SUBJECT,
    Action,
    CallWebhook,
    CancelFlowRun,
    ChangeFlowRunState,
    DeclareIncident,
    DoNothing,
    RunDeployment,
    SendNotification,
    StateType,
    TargetedAction,
    parse_action,
)

ID = "0f2a9c1e-5b7d-4e3a-9c1e-2d4f6a8b0c1d"

# One Prefect-style JSON document per action type, each with the fields that type needs.
PREFECT_STYLE: dict[str, dict[str, Any]] = {
    "do-nothing": {"type": "do-nothing"},
    "run-deployment": {
        "type": "run-deployment",
        "source": "selected",
        "deployment_id": ID,
        "parameters": {"x": 1},
        "job_variables": {"image": "python:3.11"},
        "schedule_after": 60,
    },
    "pause-deployment": {"type": "pause-deployment", "source": "selected", "deployment_id": ID},
    "resume-deployment": {"type": "resume-deployment", "source": "inferred"},
    "change-flow-run-state": {
        "type": "change-flow-run-state",
        "name": "Stuck",
        "state": "FAILED",
        "message": "ran too long",
    },
    "cancel-flow-run": {"type": "cancel-flow-run"},
    "suspend-flow-run": {"type": "suspend-flow-run"},
    "resume-flow-run": {"type": "resume-flow-run"},
    "delete-flow-run": {"type": "delete-flow-run", "source": "selected", "flow_run_id": ID},
    "call-webhook": {"type": "call-webhook", "block_document_id": ID, "payload": "{}"},
    "send-notification": {
        "type": "send-notification",
        "block_document_id": ID,
        "subject": "Hi",
        "body": "{{ event.event }}",
    },
    "pause-work-pool": {"type": "pause-work-pool", "source": "selected", "work_pool_id": ID},
    "resume-work-pool": {"type": "resume-work-pool", "source": "inferred"},
    "pause-work-queue": {"type": "pause-work-queue", "source": "selected", "work_queue_id": ID},
    "resume-work-queue": {"type": "resume-work-queue", "source": "inferred"},
    "pause-automation": {"type": "pause-automation", "source": "selected", "automation_id": ID},
    "resume-automation": {"type": "resume-automation", "source": "inferred"},
    "declare-incident": {"type": "declare-incident", "title": "{{ automation.name }} fired"},
}

# Every action with a target: its type name and the id field it targets.
TARGETED = [
    ("run-deployment", "deployment_id"),
    ("pause-deployment", "deployment_id"),
    ("resume-deployment", "deployment_id"),
    ("cancel-flow-run", "flow_run_id"),
    ("suspend-flow-run", "flow_run_id"),
    ("resume-flow-run", "flow_run_id"),
    ("delete-flow-run", "flow_run_id"),
    ("pause-work-pool", "work_pool_id"),
    ("resume-work-pool", "work_pool_id"),
    ("pause-work-queue", "work_queue_id"),
    ("resume-work-queue", "work_queue_id"),
    ("pause-automation", "automation_id"),
    ("resume-automation", "automation_id"),
]


def test_every_action_type_has_a_prefect_style_example() -> None:
    assert set(PREFECT_STYLE) == set(ACTION_TYPES)
    assert {name for name, _ in TARGETED} == {
        name for name, cls in ACTION_TYPES.items() if issubclass(cls, TargetedAction)
    }


def test_action_types_maps_each_name_to_the_class_with_that_type() -> None:
    for name, cls in ACTION_TYPES.items():
        assert issubclass(cls, Action)
        assert cls.model_fields["type"].default == name


@pytest.mark.parametrize("type_name", sorted(PREFECT_STYLE))
def test_each_type_parses_from_prefect_style_json(type_name: str) -> None:
    action = parse_action(PREFECT_STYLE[type_name])
    assert type(action) is ACTION_TYPES[type_name]
    assert action.type == type_name


def test_parsed_fields_take_the_given_values() -> None:
    action = parse_action(PREFECT_STYLE["run-deployment"])
    assert isinstance(action, RunDeployment)
    assert action.deployment_id == UUID(ID)
    assert action.parameters == {"x": 1}
    assert action.job_variables == {"image": "python:3.11"}
    assert action.schedule_after == timedelta(minutes=1)


def test_unset_fields_take_prefect_defaults() -> None:
    run = RunDeployment(deployment_id=UUID(ID))
    assert run.source == "selected"
    assert run.parameters is None
    assert run.job_variables is None
    assert run.schedule_after == timedelta(0)

    cancel = CancelFlowRun()
    assert cancel.source == "inferred"
    assert cancel.flow_run_id is None

    change = ChangeFlowRunState(state=StateType.PAUSED)
    assert (change.name, change.message, change.force) == (None, None, False)

    assert CallWebhook(block_document_id=UUID(ID)).payload == ""

    notify = SendNotification(block_document_id=UUID(ID))
    assert notify.subject == DEFAULT_NOTIFICATION_SUBJECT == "Prefect automated notification"
    assert "{{ automation.name }}" in notify.body
    assert "{{ event.event }}" in notify.body

    incident = DeclareIncident()
    assert (incident.title, incident.severity, incident.summary) == (None, None, None)


def test_unknown_type_is_rejected_naming_the_bad_tag() -> None:
    with pytest.raises(ValidationError) as info:
        parse_action({"type": "launch-rocket"})
    message = str(info.value)
    assert "launch-rocket" in message
    assert "run-deployment" in message


def test_missing_type_is_rejected() -> None:
    with pytest.raises(ValidationError, match="type"):
        parse_action({"deployment_id": ID})


@pytest.mark.parametrize(("type_name", "id_field"), TARGETED)
def test_selected_source_requires_target_id(type_name: str, id_field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_action({"type": type_name, "source": "selected"})
    assert f"{id_field} is required when source is 'selected'" in str(info.value)


@pytest.mark.parametrize(("type_name", "id_field"), TARGETED)
def test_inferred_source_forbids_target_id(type_name: str, id_field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_action({"type": type_name, "source": "inferred", id_field: ID})
    assert f"{id_field} must not be set when source is 'inferred'" in str(info.value)


def test_deployment_actions_default_to_selected_and_so_need_an_id() -> None:
    with pytest.raises(ValidationError, match="deployment_id is required"):
        parse_action({"type": "pause-deployment"})


def test_flow_run_actions_default_to_inferred_and_accept_a_selected_flow_run() -> None:
    inferred = parse_action({"type": "suspend-flow-run"})
    assert isinstance(inferred, TargetedAction)
    assert inferred.source == "inferred"

    selected = parse_action({"type": "resume-flow-run", "source": "selected", "flow_run_id": ID})
    assert selected.model_dump()["flow_run_id"] == UUID(ID)


def test_unknown_source_is_rejected() -> None:
    with pytest.raises(ValidationError, match="source"):
        parse_action({"type": "pause-work-pool", "source": "guessed", "work_pool_id": ID})


def test_unknown_extra_field_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        parse_action({"type": "do-nothing", "colour": "blue"})
    assert "colour" in str(info.value)
    assert "extra" in str(info.value).lower()


def test_required_block_document_id_is_enforced() -> None:
    with pytest.raises(ValidationError, match="block_document_id"):
        parse_action({"type": "call-webhook"})


@pytest.mark.parametrize("given", ["completed", "Completed", "COMPLETED", StateType.COMPLETED])
def test_state_is_accepted_case_insensitively_and_normalised_to_upper_case(given: Any) -> None:
    action = parse_action({"type": "change-flow-run-state", "state": given})
    assert isinstance(action, ChangeFlowRunState)
    assert action.state is StateType.COMPLETED
    assert action.model_dump(mode="json")["state"] == "COMPLETED"


def test_state_types_are_prefects() -> None:
    assert {s.value for s in StateType} == {
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "CRASHED",
        "PAUSED",
        "CANCELLING",
    }


def test_unknown_state_is_rejected() -> None:
    with pytest.raises(ValidationError, match="state"):
        parse_action({"type": "change-flow-run-state", "state": "exploded"})


@pytest.mark.parametrize("given", [30, 30.0, "PT30S"])
def test_schedule_after_accepts_seconds_and_iso_8601_durations(given: Any) -> None:
    action = parse_action({"type": "run-deployment", "deployment_id": ID, "schedule_after": given})
    assert isinstance(action, RunDeployment)
    assert action.schedule_after == timedelta(seconds=30)


@pytest.mark.parametrize("given", [-1, "-PT5S"])
def test_negative_schedule_after_is_rejected(given: Any) -> None:
    with pytest.raises(ValidationError, match="schedule_after must not be negative"):
        parse_action({"type": "run-deployment", "deployment_id": ID, "schedule_after": given})


@pytest.mark.parametrize("type_name", sorted(PREFECT_STYLE))
def test_json_dump_round_trips_to_an_equal_model(type_name: str) -> None:
    action = parse_action(PREFECT_STYLE[type_name])
    dumped = action.model_dump(mode="json")
    assert dumped["type"] == type_name
    assert parse_action(dumped) == action


def test_parse_action_accepts_any_mapping() -> None:
    from types import MappingProxyType

    action = parse_action(MappingProxyType({"type": "do-nothing"}))
    assert action == DoNothing()


def test_describe_names_type_source_and_shortened_target_id() -> None:
    assert parse_action(PREFECT_STYLE["run-deployment"]).describe() == (
        "run-deployment (selected 0f2a9c1e…)"
    )
    assert parse_action(PREFECT_STYLE["resume-work-pool"]).describe() == (
        "resume-work-pool (inferred)"
    )
    assert CancelFlowRun().describe() == "cancel-flow-run (inferred)"


def test_describe_of_untargeted_action_is_its_type() -> None:
    assert DoNothing().describe() == "do-nothing"
    assert parse_action(PREFECT_STYLE["send-notification"]).describe() == "send-notification"


def test_call_webhook_takes_a_mapping_payload_as_json_text() -> None:
    action = parse_action(
        {
            "type": "call-webhook",
            "block_document_id": "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
            "payload": {"resource": "{{ event.resource.id }}", "n": 1},
        }
    )
    assert isinstance(action, CallWebhook)
    assert json.loads(action.payload) == {"resource": "{{ event.resource.id }}", "n": 1}
