"""Lint: likely mistakes in an automation, found before it misbehaves.

Every check uses the engine's own matching (``TriggerMatcher``,
``compile_pattern``) on the automation's event triggers:

* a trigger that matches every event;
* a loop: its actions emit events its own trigger matches (the
  ``prefect.automation.triggered`` / ``.action.*`` events every firing
  makes, and the flow-run states its flow-run actions cause);
* a ``for_each`` label the expected events never carry (the log's sample);
* a Proactive ``within`` under Prefect's 10 s floor (raised to it);
* ``expect``/``after`` names or ``match`` labels never seen in the log,
  with the closest ones seen (a likely typo);
* ``actions_on_resolve`` while Resolved states are off;
* actions that act on a Prefect server while the daemon has no orchestrator.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from marmot.engine.matching import TriggerMatcher, compile_pattern
from marmot.engine.models.actions import (
    Action,
    CancelFlowRun,
    ChangeFlowRunState,
    ResumeFlowRun,
    RunDeployment,
    SuspendFlowRun,
)
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import RESOURCE_ID, RESOURCE_NAME, Event, trusted_event
from marmot.engine.models.lint import LintCheck, LintFinding, LogFacts
from marmot.engine.models.resources import ResourceSpecification
from marmot.engine.models.triggers import MIN_PROACTIVE_WITHIN, EventTrigger, Trigger
from marmot.engine.timestamps import EPOCH

__all__ = ["lint_automation", "proactive_floor"]

_WITHIN: TypeAdapter[timedelta] = TypeAdapter(timedelta)
# The events every firing of an automation makes, about the automation itself.
_OWN_EVENTS = (
    "prefect.automation.triggered",
    "prefect.automation.resolved",
    "prefect.automation.action.triggered",
    "prefect.automation.action.executed",
    "prefect.automation.action.failed",
)
# The flow-run states a new flow run passes through (run-deployment).
_NEW_RUN_STATES = ("Scheduled", "Pending", "Running", "Completed", "Failed", "Crashed")
_ANY_FLOW_RUN = "prefect.flow-run.00000000-0000-4000-8000-000000000000"
_CLOSEST = 3


def lint_automation(
    automation: Automation,
    *,
    facts: LogFacts | None = None,
    resolved_states: bool | None = None,
    has_orchestrator: bool | None = None,
) -> list[LintFinding]:
    """The findings on ``automation``: the checks on its own always, those against
    the log with ``facts``, the Resolved-states one when ``resolved_states`` is known,
    and the orchestrator one when whether the daemon has one (``has_orchestrator``)
    is known."""
    findings: list[LintFinding] = []
    for path, trigger in _event_triggers(automation.trigger, "trigger"):
        matcher = TriggerMatcher(trigger)
        findings += _matches_everything(path, trigger, matcher)
        findings += _self_loop(path, automation, matcher)
        if facts is not None and facts.names:  # an empty log says nothing
            findings += _unseen_names(path, trigger, facts)
            findings += _unseen_labels(path, trigger, facts)
            findings += _for_each_never_carried(path, trigger, matcher, facts)
    if automation.actions_on_resolve and resolved_states is False:
        findings.append(
            LintFinding(
                check=LintCheck.resolve_without_resolved_states,
                path="actions_on_resolve",
                message="actions_on_resolve never run: the daemon's resolved_states is off",
            )
        )
    if has_orchestrator is False:
        findings += _needs_orchestrator(automation)
    return findings


def _needs_orchestrator(automation: Automation) -> list[LintFinding]:
    """Actions carried out on the orchestrator, while the daemon has none: each would
    fail when the automation fires."""
    lists = {
        "actions": automation.actions,
        "actions_on_trigger": automation.actions_on_trigger,
        "actions_on_resolve": automation.actions_on_resolve,
    }
    return [
        LintFinding(
            check=LintCheck.needs_orchestrator,
            path=f"{field}[{index}]",
            message=f"{action.type} acts on a Prefect server, and the daemon has none: it "
            "would fail when the automation fires (set orchestrator.api_url or prefect.api_url)",
        )
        for field, actions in lists.items()
        for index, action in enumerate(actions)
        if action.acts_on_orchestrator
    ]


def _event_triggers(trigger: Trigger, path: str) -> Iterable[tuple[str, EventTrigger]]:
    if isinstance(trigger, EventTrigger):
        yield path, trigger
        return
    for position, child in enumerate(getattr(trigger, "triggers", [])):
        yield from _event_triggers(child, f"{path}.triggers[{position}]")


def _matches_everything(
    path: str, trigger: EventTrigger, matcher: TriggerMatcher
) -> list[LintFinding]:
    names = trigger.expect | trigger.after
    if matcher.covers_all and (not names or "*" in names):
        return [
            LintFinding(
                check=LintCheck.matches_everything,
                path=path,
                message="matches every event: no expect (or '*') and no match or "
                "match_related; it also matches the events its own firings make",
            )
        ]
    return []


def _event(name: str, resource: dict[str, str]) -> Event:
    return trusted_event(UUID(int=0), EPOCH, name, resource, [], {})


def _action_events(action: Action) -> list[str]:
    """The flow-run events an action makes happen (on the flow run it acts on)."""
    if isinstance(action, RunDeployment):
        return [f"prefect.flow-run.{state}" for state in _NEW_RUN_STATES]
    if isinstance(action, ChangeFlowRunState):
        return [f"prefect.flow-run.{action.name or action.state.value.title()}"]
    if isinstance(action, CancelFlowRun):
        return ["prefect.flow-run.Cancelling", "prefect.flow-run.Cancelled"]
    if isinstance(action, SuspendFlowRun):
        return ["prefect.flow-run.Suspended", "prefect.flow-run.Paused"]
    if isinstance(action, ResumeFlowRun):
        return ["prefect.flow-run.Pending", "prefect.flow-run.Running"]
    return []


def _self_loop(path: str, automation: Automation, matcher: TriggerMatcher) -> list[LintFinding]:
    own = {RESOURCE_ID: f"prefect.automation.{automation.id}", RESOURCE_NAME: automation.name}
    looped = [
        name
        for name in _OWN_EVENTS
        if matcher.is_interested(_event(name, own))
        and (matcher.expects(name) or matcher.starts_after(name))
    ]
    actions = [*automation.actions, *automation.actions_on_trigger, *automation.actions_on_resolve]
    flow_run = {RESOURCE_ID: _ANY_FLOW_RUN}
    caused = sorted(
        {
            name
            for action in actions
            for name in _action_events(action)
            if matcher.is_interested(_event(name, flow_run))
            and (matcher.expects(name) or matcher.starts_after(name))
        }
    )
    findings = []
    if looped:
        findings.append(
            LintFinding(
                check=LintCheck.self_loop,
                path=path,
                message="matches the events its own firings make ("
                + ", ".join(looped)
                + "): each firing can trigger the next, in a loop",
            )
        )
    if caused:
        findings.append(
            LintFinding(
                check=LintCheck.self_loop,
                path=path,
                message="its actions cause events it matches ("
                + ", ".join(caused)
                + "): each firing can trigger the next, in a loop",
            )
        )
    return findings


def _closest(word: str, seen: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(word, sorted(seen), n=_CLOSEST, cutoff=0.6)


def _unseen_names(path: str, trigger: EventTrigger, facts: LogFacts) -> list[LintFinding]:
    findings = []
    for field_name, patterns in (("expect", trigger.expect), ("after", trigger.after)):
        for pattern in sorted(patterns):
            if pattern.startswith("!") or pattern == "*":
                continue
            matches = compile_pattern(pattern)
            if any(matches(name) for name in facts.names):
                continue
            findings.append(
                LintFinding(
                    check=LintCheck.unseen_name,
                    path=f"{path}.{field_name}",
                    message=f"no event named like {pattern!r} in the log's last "
                    f"{facts.days:g} day(s)",
                    suggestions=_closest(pattern, facts.names),
                )
            )
    return findings


def _unseen_labels(path: str, trigger: EventTrigger, facts: LogFacts) -> list[LintFinding]:
    specs: list[tuple[str, ResourceSpecification, Mapping[str, frozenset[str]]]] = [
        (f"{path}.match", trigger.match, facts.values_by_label)
    ]
    specs += [
        (f"{path}.match_related[{n}]", spec, facts.related_values_by_label)
        for n, spec in enumerate(trigger.related_specs)
    ]
    findings = []
    for where, spec, values in specs:
        for label, patterns in spec.patterns().items():
            seen = values.get(label)
            if seen is None and label != RESOURCE_ID:  # every resource has an id
                findings.append(
                    LintFinding(
                        check=LintCheck.unseen_label,
                        path=f"{where}.{label}",
                        message=f"no recent event's resource carries the label {label!r}",
                        suggestions=_closest(label, values),
                    )
                )
                continue
            for pattern in patterns:
                if seen is None or pattern.startswith("!"):
                    continue
                if any(compile_pattern(pattern)(v) for v in seen):
                    continue
                findings.append(
                    LintFinding(
                        check=LintCheck.unseen_label,
                        path=f"{where}.{label}",
                        message=f"no recent event has {label} like {pattern!r}",
                        suggestions=_closest(pattern, seen),
                    )
                )
    return findings


def _for_each_never_carried(
    path: str, trigger: EventTrigger, matcher: TriggerMatcher, facts: LogFacts
) -> list[LintFinding]:
    expected = [
        n for n in facts.labels_by_name if matcher.expects(n) and matcher.interested_in_name(n)
    ]
    if not trigger.for_each or not expected:
        return []
    carried = frozenset().union(*(facts.labels_by_name[n] for n in expected))
    return [
        LintFinding(
            check=LintCheck.for_each_never_carried,
            path=f"{path}.for_each",
            message=f"the expected events seen ({', '.join(sorted(expected)[:3])}"
            f"{', ...' if len(expected) > 3 else ''}) never carry {label!r}: "
            "every one of them falls in the same bucket (key '')",
            suggestions=_closest(label, carried),
        )
        for label in sorted(trigger.for_each)
        if label not in carried
    ]


def proactive_floor(document: Mapping[str, Any]) -> list[LintFinding]:
    """Proactive triggers of a raw automation document whose ``within`` is under
    Prefect's 10 s floor (missing or 0 is raised to it; more is refused on load)."""
    trigger = document.get("trigger")
    return list(_floor(trigger, "trigger")) if isinstance(trigger, Mapping) else []


def _floor(trigger: Mapping[str, Any], path: str) -> Iterable[LintFinding]:
    children = trigger.get("triggers")
    if isinstance(children, list):
        for position, child in enumerate(children):
            if isinstance(child, Mapping):
                yield from _floor(child, f"{path}.triggers[{position}]")
        return
    if trigger.get("posture") != "Proactive":
        return
    try:
        within = _WITHIN.validate_python(trigger.get("within", 0))
    except ValidationError:
        return  # refused on load, with its own error
    if within < MIN_PROACTIVE_WITHIN:
        yield LintFinding(
            check=LintCheck.proactive_within_floor,
            path=f"{path}.within",
            message=f"a Proactive within of {within.total_seconds():g} s is under Prefect's "
            f"10 s floor: {'it is raised to 10 s' if not within else 'it is refused'}",
        )
