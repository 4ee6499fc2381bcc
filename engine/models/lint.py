"""What ``automation lint`` reports: likely mistakes in an automation, with hints.

``LogFacts`` is what the daemon's event log says about the events it has
seen (their names, and the labels of a recent sample), handed to the pure
checks in ``engine.triggers.lint``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel


class LintCheck(StrEnum):
    """The kinds of finding."""

    matches_everything = "matches_everything"
    self_loop = "self_loop"
    for_each_never_carried = "for_each_never_carried"
    proactive_within_floor = "proactive_within_floor"
    unseen_name = "unseen_name"
    unseen_label = "unseen_label"
    resolve_without_resolved_states = "resolve_without_resolved_states"
    needs_orchestrator = "needs_orchestrator"


class LintFinding(BaseModel):
    """One likely mistake: where, what, and the closest names seen (for a typo)."""

    check: LintCheck
    path: str
    message: str
    suggestions: list[str] = []


class LintReport(BaseModel):
    """The findings on one automation."""

    automation: str
    findings: list[LintFinding]
    # Whether the checks against the event log ran (a daemon answered).
    log_checked: bool
    log_days: float | None = None


@dataclass(frozen=True, slots=True)
class LogFacts:
    """What the event log has seen: every event name, and for a recent sample of
    events, the labels each name carried and the values of each label.

    ``labels_by_name`` spells labels as ``for_each`` does: a primary resource's
    own, and ``related:<role>:<label>`` for related resources.
    """

    names: frozenset[str]
    labels_by_name: dict[str, frozenset[str]] = field(default_factory=dict)
    values_by_label: dict[str, frozenset[str]] = field(default_factory=dict)
    # The labels of related resources (what `match_related` tests), any role.
    related_values_by_label: dict[str, frozenset[str]] = field(default_factory=dict)
    days: float = 0.0
