"""Planning an import of Prefect automations: what is created, updated, left, refused."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from marmot.engine.models.automations import Automation
from marmot.transport.prefect_automations import (
    ImportOutcome,
    plan_import,
    prefect_document,
    selected,
)


def prefect_automation(name: str, **fields: Any) -> dict[str, Any]:
    """An automation as Prefect's API returns it (server fields included)."""
    return {
        "id": str(uuid4()),
        "name": name,
        "description": "",
        "enabled": True,
        "tags": [],
        "trigger": {
            "type": "event",
            "id": str(uuid4()),
            "posture": "Reactive",
            "expect": ["prefect.flow-run.Failed"],
            "match": {},
            "match_related": [],
            "after": [],
            "for_each": [],
            "threshold": 1,
            "within": 0.0,
        },
        "actions": [{"type": "do-nothing"}],
        "actions_on_trigger": [],
        "actions_on_resolve": [],
        "created": "2026-12-06T10:00:00Z",
        "updated": "2026-12-06T10:00:00Z",
        **fields,
    }


def test_a_new_automation_is_created_under_its_prefect_id() -> None:
    source = prefect_automation("a")
    (step,) = plan_import([source], [])
    assert step.outcome is ImportOutcome.CREATED
    assert step.automation is not None and str(step.automation.id) == source["id"]


def test_the_same_definition_is_unchanged_and_marmots_enabled_state_stays() -> None:
    source = prefect_automation("a")
    (first,) = plan_import([source], [])
    assert first.automation is not None
    paused_source = {**source, "enabled": False}
    (again,) = plan_import([paused_source], [first.automation])
    assert again.outcome is ImportOutcome.UNCHANGED
    assert again.automation is not None and again.automation.enabled


def test_a_changed_definition_is_an_update() -> None:
    source = prefect_automation("a")
    (first,) = plan_import([source], [])
    assert first.automation is not None
    changed = {**source, "actions": [{"type": "cancel-flow-run"}]}
    (step,) = plan_import([changed], [first.automation])
    assert step.outcome is ImportOutcome.UPDATED


def test_an_invalid_automation_is_refused_with_its_field() -> None:
    (step,) = plan_import([prefect_automation("x" * 600)], [])
    assert step.outcome is ImportOutcome.REFUSED
    assert step.field == "name" and step.reason
    assert step.to_json()["field"] == "name"


def test_a_name_held_under_another_id_is_refused_or_adopted() -> None:
    held = Automation.model_validate({**prefect_automation("a"), "id": str(uuid4())})
    source = prefect_automation("a", actions=[{"type": "cancel-flow-run"}])
    (refused,) = plan_import([source], [held])
    assert refused.outcome is ImportOutcome.REFUSED and refused.field == "name"
    (adopted,) = plan_import([source], [held], adopt_by_name=True)
    assert adopted.outcome is ImportOutcome.UPDATED
    assert adopted.automation is not None and adopted.automation.id == held.id


def test_names_are_selected_by_glob() -> None:
    docs = [prefect_automation("etl-a"), prefect_automation("ops-b")]
    assert [d["name"] for d in selected(docs, ["etl-*"])] == ["etl-a"]
    assert len(selected(docs, [])) == 2


def test_an_exported_document_imports_as_the_same_automation() -> None:
    (step,) = plan_import([prefect_automation("a")], [])
    assert step.automation is not None
    document = prefect_document(step.automation)
    assert "created" not in document
    (again,) = plan_import([document], [step.automation])
    assert again.outcome is ImportOutcome.UNCHANGED
