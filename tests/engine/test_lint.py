"""Lint (``engine.triggers.lint``): one test per check, each with a clean counterpart."""

from __future__ import annotations

from typing import Any

from marmot.engine.models.lint import LintCheck, LintFinding, LogFacts
from marmot.engine.triggers.lint import lint_automation, proactive_floor
from tests.engine.factories import automation

FACTS = LogFacts(
    names=frozenset({"prefect.flow-run.Failed", "prefect.flow-run.Completed", "job.done"}),
    labels_by_name={
        "prefect.flow-run.Failed": frozenset(
            {
                "prefect.resource.id",
                "prefect.resource.name",
                "related:deployment:prefect.resource.id",
            }
        ),
        "job.done": frozenset({"prefect.resource.id"}),
    },
    values_by_label={
        "prefect.resource.id": frozenset({"prefect.flow-run.1", "job.a"}),
        "prefect.resource.name": frozenset({"nightly-etl"}),
    },
    related_values_by_label={
        "prefect.resource.role": frozenset({"deployment"}),
        "prefect.resource.id": frozenset({"prefect.deployment.9"}),
    },
    days=7,
)


def _checks(trigger: dict[str, Any], **kw: Any) -> list[LintFinding]:
    facts = kw.pop("facts", None)
    resolved = kw.pop("resolved_states", None)
    return lint_automation(automation(trigger, **kw), facts=facts, resolved_states=resolved)


def _kinds(findings: list[LintFinding]) -> list[LintCheck]:
    return [f.check for f in findings]


def test_a_trigger_with_no_condition_matches_everything_and_loops() -> None:
    kinds = _kinds(_checks({"threshold": 1}))
    assert LintCheck.matches_everything in kinds
    assert LintCheck.self_loop in kinds  # it matches its own automation.triggered
    assert _checks({"expect": ["prefect.flow-run.Failed"]}) == []
    assert LintCheck.matches_everything not in _kinds(
        _checks({"match": {"prefect.resource.id": "job.*"}})
    )


def test_matching_its_own_action_events_is_a_loop() -> None:
    [finding] = _checks({"expect": ["prefect.automation.action.*"]})
    assert finding.check is LintCheck.self_loop
    assert "prefect.automation.action.executed" in finding.message
    # Narrowed to another automation's events: no loop.
    other = {"prefect.resource.id": "prefect.automation.00000000-0000-0000-0000-000000000001"}
    assert _checks({"expect": ["prefect.automation.action.*"], "match": other}) == []


def test_an_action_that_causes_the_expected_state_is_a_loop() -> None:
    trigger = {"expect": ["prefect.flow-run.Cancelled"]}
    actions = [{"type": "cancel-flow-run"}]
    [finding] = _checks(trigger, actions=actions)
    assert finding.check is LintCheck.self_loop and "Cancelled" in finding.message
    assert _checks(trigger, actions=[{"type": "do-nothing"}]) == []


def test_for_each_label_the_expected_events_never_carry() -> None:
    trigger = {
        "expect": ["prefect.flow-run.Failed"],
        "for_each": ["prefect.resource.nmae"],
    }
    kinds = _checks(trigger, facts=FACTS)
    [finding] = [f for f in kinds if f.check is LintCheck.for_each_never_carried]
    assert finding.suggestions[0] == "prefect.resource.name"
    fine = {**trigger, "for_each": ["related:deployment:prefect.resource.id"]}
    assert _checks(fine, facts=FACTS) == []


def test_proactive_within_under_the_floor() -> None:
    missing = {"trigger": {"posture": "Proactive", "expect": ["x"]}}
    [finding] = proactive_floor(missing)
    assert finding.check is LintCheck.proactive_within_floor and "raised" in finding.message
    nested = {"trigger": {"type": "sequence", "triggers": [{"posture": "Proactive", "within": 5}]}}
    [finding] = proactive_floor(nested)
    assert finding.path == "trigger.triggers[0].within" and "refused" in finding.message
    assert proactive_floor({"trigger": {"posture": "Proactive", "within": "PT30S"}}) == []


def test_names_never_seen_suggest_the_closest() -> None:
    findings = _checks({"expect": ["prefect.flow-run.Faild"], "after": ["job.*"]}, facts=FACTS)
    [finding] = findings
    assert finding.check is LintCheck.unseen_name and finding.path == "trigger.expect"
    assert finding.suggestions[0] == "prefect.flow-run.Failed"


def test_match_labels_never_seen_suggest_the_closest() -> None:
    trigger = {
        "expect": ["prefect.flow-run.Failed"],
        "match": {"prefect.resource.name": "nightly-elt", "prefect.resource.nam": "x"},
        "match_related": {"prefect.resource.role": "deployment"},
    }
    findings = _checks(trigger, facts=FACTS)
    by_path = {f.path: f for f in findings}
    assert by_path["trigger.match.prefect.resource.name"].suggestions == ["nightly-etl"]
    assert by_path["trigger.match.prefect.resource.nam"].suggestions[0] == "prefect.resource.name"
    assert len(findings) == 2  # match_related's role was seen


def test_actions_on_resolve_without_resolved_states() -> None:
    resolve = [{"type": "do-nothing"}]
    trigger = {"expect": ["prefect.flow-run.Failed"]}
    [finding] = _checks(trigger, actions_on_resolve=resolve, resolved_states=False)
    assert finding.check is LintCheck.resolve_without_resolved_states
    assert _checks(trigger, actions_on_resolve=resolve, resolved_states=True) == []
    assert _checks(trigger, actions_on_resolve=resolve) == []  # setting unknown: not checked


def test_orchestrator_actions_without_an_orchestrator() -> None:
    trigger = {"expect": ["job.done"]}
    actions = [
        {"type": "do-nothing"},
        {"type": "cancel-flow-run", "source": "inferred"},
        {"type": "change-flow-run-state", "state": "FAILED"},
    ]
    document = automation(trigger, actions=actions)
    findings = lint_automation(document, has_orchestrator=False)
    assert [(f.check, f.path) for f in findings] == [
        (LintCheck.needs_orchestrator, "actions[1]"),
        (LintCheck.needs_orchestrator, "actions[2]"),
    ]
    assert "orchestrator.api_url" in findings[0].message
    assert lint_automation(document, has_orchestrator=True) == []
    assert lint_automation(document) == []  # setting unknown: not checked


def test_compound_children_are_linted_with_their_paths() -> None:
    trigger = {"type": "compound", "require": "any", "triggers": [{"expect": ["a"]}, {}]}
    findings = _checks(trigger)
    assert {f.path for f in findings} == {"trigger.triggers[1]"}
