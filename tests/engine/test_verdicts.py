"""Dry-run verdicts (``engine.triggers.verdicts``): one test per verdict kind.

Each test drives a real ``Evaluator`` through ``DryRun`` and checks the
verdict it reports and that the verdict agrees with the engine's state.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from marmot.engine.errors import NotFound
from marmot.engine.models.history import WhyStatus
from marmot.engine.models.verdicts import IgnoredBecause, LeafOutcome, LeafVerdict
from marmot.engine.timestamps import to_us
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.verdicts import DryRun, check_pattern
from marmot.engine.triggers.why import explain_event
from tests.engine.factories import AUTOMATION_ID, at, automation, event


def _dry_run(trigger: dict[str, Any], state: dict[str, Any] | None = None, **kw: Any) -> DryRun:
    return DryRun(automation(trigger), state, **kw)


def _leaf(tester: DryRun, ev: Any, **kw: Any) -> LeafVerdict:
    [leaf] = tester.test(ev, **kw).triggers
    return leaf


COUNT3 = {
    "expect": ["job.failed"],
    "for_each": ["prefect.resource.id"],
    "threshold": 3,
    "within": 60,
}


def test_a_name_no_pattern_matches_is_not_routed() -> None:
    leaf = _leaf(_dry_run(COUNT3), event("job.started", 0))
    assert leaf.outcome is LeafOutcome.not_routed
    assert not leaf.name.routed
    assert [c.model_dump() for c in leaf.name.expect] == [
        {"pattern": "job.failed", "ok": False, "how": "equals"}
    ]


def test_expect_patterns_report_which_matched_with_globs_and_negations() -> None:
    tester = _dry_run({"expect": ["job.*", "!job.started"], "threshold": 5, "within": 60})
    leaf = _leaf(tester, event("job.failed", 0))
    checks = {c.pattern: (c.ok, c.how) for c in leaf.name.expect}
    assert checks == {"job.*": (True, "glob"), "!job.started": (True, "not (equals)")}
    assert leaf.name.expected and leaf.name.routed


def test_a_failed_match_label_names_the_label_value_and_patterns() -> None:
    trigger = {**COUNT3, "match": {"prefect.resource.id": ["job.a*", "!job.b"], "env": "prod"}}
    leaf = _leaf(_dry_run(trigger), event("job.failed", 0, "job.b", labels={"env": "prod"}))
    assert leaf.outcome is LeafOutcome.condition_failed
    by_label = {v.label: v for v in leaf.match}
    assert not by_label["prefect.resource.id"].ok
    assert [c.ok for c in by_label["prefect.resource.id"].patterns] == [False, False]
    assert by_label["env"].ok
    assert "job.b" in leaf.reason and "'job.a*'" in leaf.reason


def test_a_missing_match_label_fails() -> None:
    trigger = {**COUNT3, "match": {"env": "prod"}}
    leaf = _leaf(_dry_run(trigger), event("job.failed", 0))
    assert leaf.outcome is LeafOutcome.condition_failed
    assert leaf.match[0].value is None
    assert "no label 'env'" in leaf.reason


def test_match_related_reports_each_role_and_the_resource_that_matched() -> None:
    trigger = {**COUNT3, "match_related": {"prefect.resource.role": "flow", "name": "etl-*"}}
    related = [
        {"prefect.resource.id": "t.1", "prefect.resource.role": "tag"},
        {"prefect.resource.id": "f.1", "prefect.resource.role": "flow", "name": "etl-daily"},
    ]
    leaf = _leaf(_dry_run(trigger), event("job.failed", 0, related=related))
    [spec] = leaf.match_related
    assert spec.ok and spec.matched_resource == 1
    assert leaf.outcome is LeafOutcome.counts
    miss = _leaf(_dry_run(trigger), event("job.failed", 0, related=related[:1]))
    assert miss.outcome is LeafOutcome.condition_failed
    assert not miss.match_related[0].ok
    assert "match_related[0]" in miss.reason


def test_a_counted_event_shows_the_bucket_before_and_after() -> None:
    tester = _dry_run(COUNT3)
    first = _leaf(tester, event("job.failed", 0, "job.a"))
    assert first.outcome is LeafOutcome.counts
    assert first.before is None and first.after is not None and first.after.count == 1
    assert first.key == {"prefect.resource.id": "job.a"}
    second = _leaf(tester, event("job.failed", 5, "job.a"))
    assert second.before is not None and second.before.count == 1
    assert second.after is not None and second.after.count == 2
    assert second.reason == "counts towards 2 of 3"
    assert second.after.end == at(60)


def test_the_event_that_reaches_the_threshold_fires() -> None:
    tester = _dry_run(COUNT3)
    for t in (0, 1):
        tester.test(event("job.failed", t, "job.a"))
    verdict = tester.test(event("job.failed", 2, "job.a"))
    [leaf] = verdict.triggers
    assert leaf.outcome is LeafOutcome.fires
    assert verdict.fires and len(verdict.firing_ids) == 1
    # The window that fired is gone; the next one opens from the end of the last.
    assert leaf.before is not None and leaf.before.count == 2
    assert leaf.after is not None and leaf.after.count == 0


def test_a_late_event_is_ignored_as_late() -> None:
    trigger = {"after": ["job.started"], "expect": ["job.failed"], "within": 60, "threshold": 2}
    tester = _dry_run(trigger)
    opened = _leaf(tester, event("job.started", 100))
    assert opened.outcome is LeafOutcome.opens_window
    leaf = _leaf(tester, event("job.failed", 50))
    assert leaf.outcome is LeafOutcome.ignored and leaf.because is IgnoredBecause.late
    assert leaf.after is not None and leaf.after.count == 0


def test_an_event_past_a_proactive_window_is_out_of_window() -> None:
    trigger = {
        "posture": "Proactive",
        "after": ["job.started"],
        "expect": ["job.finished"],
        "threshold": 1,
        "within": 30,
    }
    # Fired already: the event is not counted. Use a threshold the count cannot meet.
    tester = _dry_run({**trigger, "threshold": 2})
    tester.test(event("job.started", 0))
    leaf = _leaf(tester, event("job.finished", 10))
    assert leaf.outcome is LeafOutcome.counts
    late = _leaf(tester, event("job.finished", 40))
    # Past the end of a window with fewer than 2: the engine fires on it.
    assert late.outcome is LeafOutcome.fires


def test_reactive_event_past_the_window_counts_in_a_new_window() -> None:
    tester = _dry_run(COUNT3)
    tester.test(event("job.failed", 0, "job.a"))
    leaf = _leaf(tester, event("job.failed", 70, "job.a"))
    assert leaf.outcome is LeafOutcome.counts
    assert "new window" in leaf.reason
    assert leaf.after is not None and leaf.after.start == at(70)


def test_expected_event_without_an_open_window_is_ignored() -> None:
    trigger = {"after": ["job.started"], "expect": ["job.failed"], "within": 60, "threshold": 1}
    leaf = _leaf(_dry_run(trigger), event("job.failed", 0))
    assert leaf.outcome is LeafOutcome.ignored and leaf.because is IgnoredBecause.no_window


def test_an_after_event_with_a_window_open_is_not_expected() -> None:
    trigger = {"after": ["job.started"], "expect": ["job.failed"], "within": 60, "threshold": 2}
    tester = _dry_run(trigger)
    tester.test(event("job.started", 0))
    leaf = _leaf(tester, event("job.started", 5, id=uuid4()))
    assert leaf.because is IgnoredBecause.not_expected


def test_proactive_with_after_holds_expect_only_events() -> None:
    trigger = {
        "posture": "Proactive",
        "after": ["job.started"],
        "expect": ["job.finished"],
        "for_each": ["prefect.resource.id"],
        "within": 30,
    }
    tester = _dry_run(trigger)
    leaf = _leaf(tester, event("job.finished", 5, "job.a"))
    assert leaf.outcome is LeafOutcome.held
    assert tester.evaluator.leaves[0].held is not None


def test_a_duplicate_id_is_ignored_and_changes_nothing() -> None:
    tester = _dry_run(COUNT3)
    ev = event("job.failed", 0, "job.a")
    tester.test(ev)
    leaf = _leaf(tester, ev)
    assert leaf.because is IgnoredBecause.duplicate_id
    assert leaf.after is not None and leaf.after.count == 1
    told = _leaf(_dry_run(COUNT3), ev, is_duplicate=True)
    assert told.because is IgnoredBecause.duplicate_id and told.after is None


def test_a_follower_of_an_unseen_leader_is_held_for_follows() -> None:
    leader = uuid4()
    tester = _dry_run(COUNT3)
    leaf = _leaf(tester, event("job.failed", 0, follows=leader))
    assert leaf.because is IgnoredBecause.held_for_follows and leaf.after is None
    known = _dry_run(COUNT3, is_known=lambda event_id: event_id == leader)
    assert _leaf(known, event("job.failed", 0, follows=leader)).outcome is LeafOutcome.counts


def test_a_paused_automation_evaluates_nothing() -> None:
    tester = DryRun(automation(COUNT3, enabled=False))
    leaf = _leaf(tester, event("job.failed", 0))
    assert leaf.because is IgnoredBecause.paused


def test_a_live_state_copy_is_used_and_left_alone() -> None:
    live = Evaluator(automation(COUNT3))
    live.apply([event("job.failed", 0, "job.a"), event("job.failed", 1, "job.a")])
    snapshot = live.snapshot()
    tester = _dry_run(COUNT3, live.snapshot())
    leaf = _leaf(tester, event("job.failed", 2, "job.a"))
    assert leaf.outcome is LeafOutcome.fires and leaf.before is not None
    assert leaf.before.count == 2
    assert live.snapshot() == snapshot  # the live engine never saw it
    assert str(AUTOMATION_ID) == snapshot["automation"]


def test_proactive_counts_say_what_keeps_it_quiet() -> None:
    trigger = {"posture": "Proactive", "expect": ["beat"], "threshold": 2, "within": 30}
    tester = _dry_run(trigger)
    tester.evaluator.advance(at(0), at(0))
    leaf = _leaf(tester, event("beat", 1))
    assert leaf.outcome is LeafOutcome.counts
    assert leaf.after is not None and leaf.after.deadline == at(30)
    assert "keep it from firing" in leaf.reason


def test_compound_children_and_parent_verdicts() -> None:
    trigger = {
        "type": "compound",
        "require": "all",
        "within": 60,
        "triggers": [{"expect": ["a"]}, {"expect": ["b"]}],
    }
    tester = _dry_run(trigger)
    first = tester.test(event("a", 0))
    [parent] = first.composites
    assert not parent.fires and parent.fired_children == ["trigger.triggers[0]"]
    assert list(parent.recorded_after) == ["trigger.triggers[0]"]
    assert "1 recorded" in parent.reason
    assert [leaf.outcome for leaf in first.triggers] == [LeafOutcome.fires, LeafOutcome.not_routed]
    second = tester.test(event("b", 1))
    [parent] = second.composites
    assert parent.fires and second.fires and parent.recorded_after == {}
    assert list(parent.recorded_before) == ["trigger.triggers[0]"]


def test_sequence_out_of_order_waits() -> None:
    trigger = {"type": "sequence", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]}
    tester = _dry_run(trigger)
    tester.test(event("b", 0))
    verdict = tester.test(event("a", 1))
    [parent] = verdict.composites
    assert not parent.fires and "out of order" in parent.reason


def test_check_pattern_spells_out_kinds() -> None:
    assert check_pattern("*", "x").how == "any"
    assert check_pattern("!a?", "ab").model_dump() == {
        "pattern": "!a?",
        "ok": False,
        "how": "not (glob)",
    }
    assert not check_pattern("a", None).ok


def test_events_are_processed_at_their_received_time() -> None:
    tester = _dry_run(COUNT3)
    ev = event("job.failed", 0, received=5)
    verdict = tester.test(ev)
    assert verdict.occurred == at(0)
    assert to_us(at(5)) > to_us(verdict.occurred)


# -- why: a logged event at the time, and what its bucket did later ---------------------


def _log(*events: Any) -> list[tuple[int, Any]]:
    return list(enumerate(events, start=1))


def test_why_follows_the_bucket_to_its_firing() -> None:
    first = event("job.failed", 0, "job.a")
    log = _log(first, event("job.failed", 1, "job.a"), event("job.failed", 2, "job.a"))
    report = explain_event(automation(COUNT3), log, first.id)
    assert report.status is WhyStatus.evaluated and report.seq == 1
    [after] = report.aftermath
    assert after.what == "fired" and after.at == at(2) and after.count == 3
    assert len(after.firing_ids) == 1


def test_why_reports_a_window_that_ended_short() -> None:
    first = event("job.failed", 0, "job.a")
    log = _log(first, event("job.failed", 1, "job.a"), event("job.failed", 200, "job.a"))
    report = explain_event(automation(COUNT3), log, first.id)
    [after] = report.aftermath
    assert after.what == "expired" and after.count == 2 and after.at == at(60)
    assert "did not fire" in after.detail


def test_why_reports_a_window_still_open_and_uninteresting_events() -> None:
    first, other = event("job.failed", 0, "job.a"), event("job.started", 1, "job.a")
    report = explain_event(automation(COUNT3), _log(first, other), first.id)
    assert [a.what for a in report.aftermath] == ["open"]
    report = explain_event(automation(COUNT3), _log(first, other), other.id)
    assert report.status is WhyStatus.not_interesting and report.replayed_events == 1
    failing = explain_event(automation({**COUNT3, "match": {"env": "x"}}), _log(first), first.id)
    assert failing.status is WhyStatus.condition_failed


def test_why_proactive_expiry_fires_at_the_deadline() -> None:
    trigger = {
        "posture": "Proactive",
        "after": ["job.started"],
        "expect": ["job.finished"],
        "for_each": ["prefect.resource.id"],
        "within": 30,
    }
    started = event("job.started", 0, "job.a")
    report = explain_event(automation(trigger), _log(started, event("x", 100, "job.z")), started.id)
    [after] = report.aftermath
    assert after.what == "fired" and after.at == at(30)


def test_why_of_an_event_not_in_the_log_is_not_found() -> None:
    with pytest.raises(NotFound):
        explain_event(automation(COUNT3), _log(event("job.failed", 0)), uuid4())
