"""Templates are checked when a document is accepted, as Prefect checks them on save."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from marmot.engine.models.automations import Automation
from marmot.engine.templates.checks import validated_automation, validated_webhook

BLOCK = "00000000-0000-4000-8000-000000000001"


def _automation(*actions: dict[str, Any], section: str = "actions") -> dict[str, Any]:
    return {"name": "t", "trigger": {"expect": ["x"]}, section: list(actions)}


def _problems(document: dict[str, Any]) -> list[tuple[Any, str]]:
    with pytest.raises(ValidationError) as caught:
        validated_automation(document)
    return [(e["loc"], e["msg"]) for e in caught.value.errors()]


def test_a_bad_webhook_payload_is_named_by_its_field_path() -> None:
    [(loc, message)] = _problems(
        _automation({"type": "call-webhook", "block_document_id": BLOCK, "payload": "{{ x "})
    )
    assert loc == ("actions", 0, "call-webhook", "payload")
    assert message.startswith("Value error, 'payload' is not a valid template: line 1:")


def test_every_bad_template_is_reported_in_every_action_list() -> None:
    document = _automation(
        {"type": "send-notification", "block_document_id": BLOCK, "subject": "{% for %}"},
        {"type": "declare-incident", "title": "{{ }}"},
    )
    document["actions_on_trigger"] = [
        {"type": "run-deployment", "source": "inferred", "parameters": {"a": "{{ x"}}
    ]
    locs = [loc for loc, _ in _problems(document)]
    assert locs == [
        ("actions", 0, "send-notification", "subject"),
        ("actions", 1, "declare-incident", "title"),
        ("actions_on_trigger", 0, "run-deployment", "parameters"),
    ]


def test_models_alone_do_not_check_templates() -> None:
    # Trusted documents (the store, actors) are rebuilt without the sandbox.
    document = _automation({"type": "call-webhook", "block_document_id": BLOCK, "payload": "{{"})
    assert Automation.model_validate(document).actions[0].type == "call-webhook"


def test_good_templates_pass() -> None:
    automation = validated_automation(
        _automation(
            {
                "type": "call-webhook",
                "block_document_id": BLOCK,
                "payload": '{"run": "{{ event.resource.id }}"}',
            }
        )
    )
    assert automation.name == "t"


def test_a_webhook_template_is_checked_at_its_field() -> None:
    with pytest.raises(ValidationError) as caught:
        validated_webhook({"name": "gh", "template": "{{ body.x "})
    [error] = caught.value.errors()
    assert error["loc"] == ("template",)
    assert "line 1" in error["msg"]


def test_a_state_name_and_message_are_not_templates_as_in_prefect() -> None:
    automation = validated_automation(
        _automation(
            {
                "type": "change-flow-run-state",
                "state": "FAILED",
                "name": "Stuck {{ ",
                "message": "{% not a template",
            }
        )
    )
    assert automation.actions[0].type == "change-flow-run-state"
