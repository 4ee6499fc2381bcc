"""SEMANTICS §1 (labels) and §2 (matching): patterns, specifications, interest, keys."""

from __future__ import annotations

from typing import Any

from marmot.engine.interest import InterestIndex
from marmot.engine.matching import (
    CompiledSpec,
    TriggerMatcher,
    compile_pattern,
    name_regex,
    pattern_matches,
)
from marmot.engine.models.resources import ResourceSpecification
from marmot.engine.models.triggers import EventTrigger
from tests.engine.factories import evaluator, event


def _matcher(**trigger: Any) -> TriggerMatcher:
    return TriggerMatcher(EventTrigger.model_validate(trigger))


def _spec(root: dict[str, str | list[str]]) -> CompiledSpec:
    return CompiledSpec(ResourceSpecification(root))


# -- §1: labels -------------------------------------------------------------------------


def test_plain_label_reads_primary_resource() -> None:
    e = event("x", 0, resource_id="prefect.flow-run.1", labels={"env": "prod"})

    assert e.resource_id == "prefect.flow-run.1"
    assert e.find_label("prefect.resource.id") == "prefect.flow-run.1"
    assert e.find_label("env") == "prod"
    assert e.find_label("missing") is None


def test_related_label_reads_first_related_resource_with_role() -> None:
    e = event(
        "x",
        0,
        related=[
            {"prefect.resource.id": "prefect.tag.a", "prefect.resource.role": "tag"},
            {
                "prefect.resource.id": "prefect.flow.1",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "first",
            },
            {
                "prefect.resource.id": "prefect.flow.2",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "second",
            },
        ],
    )

    assert e.find_label("related:flow:prefect.resource.id") == "prefect.flow.1"
    assert e.find_label("related:flow:prefect.resource.name") == "first"
    assert e.find_label("related:tag:prefect.resource.id") == "prefect.tag.a"


def test_related_label_missing_on_first_resource_with_role_is_none() -> None:
    # The FIRST related resource with the role decides, even if a later one has the label.
    e = event(
        "x",
        0,
        related=[
            {"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"},
            {
                "prefect.resource.id": "prefect.flow.2",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "second",
            },
        ],
    )

    assert e.find_label("related:flow:prefect.resource.name") is None


def test_related_label_without_resource_of_role_is_none() -> None:
    e = event(
        "x",
        0,
        related=[{"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"}],
    )

    assert e.find_label("related:deployment:prefect.resource.id") is None


def test_label_name_not_of_related_form_reads_primary_resource() -> None:
    e = event("x", 0, labels={"related:note": "kept"})

    assert e.find_label("related:note") == "kept"


def test_related_role_may_contain_colons() -> None:
    e = event(
        "x",
        0,
        related=[{"prefect.resource.id": "r.9", "prefect.resource.role": "team:alpha"}],
    )

    assert e.find_label("related:team:alpha:prefect.resource.id") == "r.9"


# -- §2: patterns -----------------------------------------------------------------------


def test_pattern_is_case_sensitive_shell_glob() -> None:
    assert pattern_matches("prefect.flow-run.*", "prefect.flow-run.Completed")
    assert pattern_matches("prefect.flow-run.Complete?", "prefect.flow-run.Completed")
    assert pattern_matches("run-[ab]", "run-b")
    assert pattern_matches("exact", "exact")
    assert pattern_matches("*", "")
    assert not pattern_matches("run-[ab]", "run-c")
    assert not pattern_matches("prefect.flow-run.completed", "prefect.flow-run.Completed")
    assert not pattern_matches("*.completed", "prefect.flow-run.Completed")
    assert not pattern_matches("exact", "exactly")


def test_negated_pattern_matches_when_rest_does_not() -> None:
    assert pattern_matches("!prefect.flow-run.*", "prefect.task-run.1")
    assert not pattern_matches("!prefect.flow-run.*", "prefect.flow-run.1")
    assert compile_pattern("!prod")("dev")
    assert not compile_pattern("!prod")("prod")


def test_negated_pattern_does_not_match_missing_label() -> None:
    assert not pattern_matches("!prod", None)
    assert not pattern_matches("*", None)
    assert not _spec({"env": "!prod"}).matches({"prefect.resource.id": "r"})
    assert _spec({"env": "!prod"}).matches({"prefect.resource.id": "r", "env": "dev"})


def test_spec_matches_when_every_label_has_a_matching_pattern() -> None:
    spec = _spec({"prefect.resource.id": ["prefect.flow-run.*", "prefect.task-run.*"], "env": "p*"})

    assert spec.matches({"prefect.resource.id": "prefect.task-run.1", "env": "prod"})
    assert spec.matches({"prefect.resource.id": "prefect.flow-run.1", "env": "preprod"})
    assert not spec.matches({"prefect.resource.id": "prefect.flow-run.1", "env": "dev"})
    assert not spec.matches({"prefect.resource.id": "prefect.deployment.1", "env": "prod"})
    assert not spec.matches({"prefect.resource.id": "prefect.flow-run.1"})


def test_empty_pattern_list_matches_nothing() -> None:
    spec = _spec({"env": []})

    assert not spec.matches({"prefect.resource.id": "r", "env": "prod"})
    assert not spec.matches({"prefect.resource.id": "r", "env": ""})
    assert not spec.includes([{"prefect.resource.id": "r", "env": "prod"}])


def test_empty_spec_includes_any_set_of_resources() -> None:
    assert _spec({}).includes([])
    assert _spec({}).includes([{"prefect.resource.id": "r"}])


def test_spec_includes_set_when_one_resource_matches() -> None:
    spec = _spec({"prefect.resource.role": "flow"})

    assert not spec.includes([])
    assert not spec.includes([{"prefect.resource.id": "t", "prefect.resource.role": "tag"}])
    assert spec.includes(
        [
            {"prefect.resource.id": "t", "prefect.resource.role": "tag"},
            {"prefect.resource.id": "f", "prefect.resource.role": "flow"},
        ]
    )


def test_trigger_covers_event_when_match_and_every_match_related_include_it() -> None:
    matcher = _matcher(
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=[
            {"prefect.resource.role": "flow", "prefect.resource.id": "prefect.flow.etl"},
            {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.prod"},
        ],
    )
    flow = {"prefect.resource.id": "prefect.flow.etl", "prefect.resource.role": "flow"}
    tag = {"prefect.resource.id": "prefect.tag.prod", "prefect.resource.role": "tag"}

    # Each related specification is satisfied by a different related resource.
    assert matcher.covers(event("x", 0, "prefect.flow-run.1", related=[flow, tag]))
    assert not matcher.covers(event("x", 0, "prefect.flow-run.1", related=[flow]))
    assert not matcher.covers(event("x", 0, "prefect.flow-run.1", related=[tag]))
    assert not matcher.covers(event("x", 0, "prefect.task-run.1", related=[flow, tag]))


def test_single_match_related_spec_must_include_related() -> None:
    matcher = _matcher(match_related={"prefect.resource.role": "flow"})
    flow = {"prefect.resource.id": "prefect.flow.etl", "prefect.resource.role": "flow"}

    assert matcher.covers(event("x", 0, related=[flow]))
    assert not matcher.covers(event("x", 0))


def test_trigger_without_match_covers_every_event() -> None:
    matcher = _matcher()

    assert matcher.covers(event("x", 0, "anything"))
    assert matcher.is_interested(event("any.name", 0, "anything"))


# -- §2: event names ----------------------------------------------------------------------


def test_star_in_name_regex_needs_at_least_one_character() -> None:
    matcher = _matcher(expect=["prefect.flow-run.*"])
    ev = evaluator({"type": "event", "expect": ["foo*"], "threshold": 1})

    assert not matcher.interested_in_name("prefect.flow-run.")
    assert matcher.interested_in_name("prefect.flow-run.Completed")
    assert name_regex(["foo*"]).match("foo") is None
    # fnmatch alone would accept "foo" for "foo*"; the name regex does not, so no firing.
    assert ev.apply([event("foo", 0)]) == []
    assert len(ev.apply([event("foo.bar", 1)])) == 1


def test_name_regex_is_anchored_at_start_only() -> None:
    assert name_regex(["foo"]).match("foobar") is not None
    assert name_regex(["foo"]).match("xfoo") is None
    assert name_regex(["a*c", "b"]).match("bz") is not None
    # "a[bc]" passes the fnmatch part; only the literal "a" alternative of the
    # regex matches, and only because the regex is not anchored at the end.
    assert _matcher(expect=["a[bc]", "a"]).interested_in_name("ab")


def test_name_regex_takes_glob_characters_other_than_star_literally() -> None:
    matcher = _matcher(expect=["run.?"])

    assert not matcher.interested_in_name("run.1")
    assert matcher.interested_in_name("run.?")


def test_empty_expect_makes_trigger_interested_in_any_name() -> None:
    matcher = _matcher(after=["start"])

    assert matcher.interested_in_name("start")
    assert matcher.interested_in_name("anything.else")
    assert name_regex([]).match("") is None
    assert name_regex([]).match("x") is not None


def test_after_names_are_part_of_interest() -> None:
    matcher = _matcher(expect=["done"], after=["start"])

    assert matcher.interested_in_name("start")
    assert matcher.interested_in_name("done")
    assert not matcher.interested_in_name("other")


def test_interest_ignores_negation_but_expects_honours_it() -> None:
    matcher = _matcher(expect=["!skip"])

    # (a) is plain fnmatchcase: "!skip" matches only the literal name "!skip".
    assert not matcher.interested_in_name("other")
    assert matcher.interested_in_name("!skip")
    # expects() is !-aware: "other" is not "skip", so it is expected.
    assert matcher.expects("other")
    assert not matcher.expects("skip")


def test_expects_is_true_when_expect_is_empty() -> None:
    matcher = _matcher(after=["start"])

    assert matcher.expects("anything")
    assert _matcher(expect=["done"]).expects("done")
    assert not _matcher(expect=["done"]).expects("other")


def test_starts_after_is_false_without_after_and_honours_negation() -> None:
    assert not _matcher(expect=["x"]).starts_after("x")
    assert _matcher(after=["start.*"]).starts_after("start.now")
    assert _matcher(after=["!stop"]).starts_after("go")
    assert not _matcher(after=["!stop"]).starts_after("stop")


# -- §2: bucketing keys -------------------------------------------------------------------


def test_bucketing_key_reads_sorted_for_each_labels_missing_as_empty() -> None:
    matcher = _matcher(for_each=["zone", "related:flow:prefect.resource.name", "env"])
    e = event(
        "x",
        0,
        labels={"env": "prod"},
        related=[
            {
                "prefect.resource.id": "prefect.flow.1",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "etl",
            }
        ],
    )

    key = matcher.bucketing_key(e)

    assert key == ("prod", "etl", "")
    labels = matcher.labels(key)
    assert list(labels) == ["env", "related:flow:prefect.resource.name", "zone"]
    assert labels == {"env": "prod", "related:flow:prefect.resource.name": "etl", "zone": ""}


def test_firing_labels_are_the_bucketing_key() -> None:
    ev = evaluator({"type": "event", "expect": ["x"], "for_each": ["prefect.resource.id"]})

    firings = ev.apply([event("x", 0, "r1"), event("x", 1, "r2")])

    assert [dict(f.labels) for f in firings] == [
        {"prefect.resource.id": "r1"},
        {"prefect.resource.id": "r2"},
    ]


def test_interest_index_routes_exactly_as_the_whole_interest_test() -> None:
    """The router's index (names cached, resource test skipped where a trigger
    takes every resource) agrees with SEMANTICS §2 applied trigger by trigger."""
    flow = {"prefect.resource.id": "prefect.flow.etl", "prefect.resource.role": "flow"}
    triggers: dict[str, list[TriggerMatcher]] = {
        "any-name": [_matcher()],
        "completed": [_matcher(expect=["prefect.flow-run.Completed"])],
        "runs-only": [
            _matcher(
                expect=["prefect.flow-run.*"], match={"prefect.resource.id": "prefect.flow-run.*"}
            )
        ],
        "etl-related": [_matcher(expect=["prefect.flow-run.*"], match_related=flow)],
        # A compound: one child takes every resource for one name only.
        "two-children": [
            _matcher(
                expect=["prefect.flow-run.Failed"], match={"prefect.resource.id": "nothing.*"}
            ),
            _matcher(expect=["prefect.flow-run.Crashed"]),
        ],
        "after-only": [_matcher(after=["prefect.flow-run.Running"], expect=["x.never"])],
    }
    index: InterestIndex[str] = InterestIndex()
    for key, matchers in triggers.items():
        index.set(key, matchers)
    names = [
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.Running",
        "other",
    ]
    resources = ["prefect.flow-run.1", "prefect.task-run.2", "nothing.3"]
    checked = 0
    for _ in range(2):  # the second pass is answered from the name cache
        for name in names:
            for resource in resources:
                for related in ([], [flow]):
                    e = event(name, 0, resource, related=related)
                    expected = [
                        key
                        for key, matchers in triggers.items()
                        if any(m.is_interested(e) for m in matchers)
                    ]
                    assert index.route(e) == expected, (name, resource, related)
                    checked += 1
    assert checked == 2 * 5 * 3 * 2
    index.remove("any-name")
    assert "any-name" not in index.route(event("other", 0, "prefect.flow-run.1"))


def test_interest_index_files_literal_resource_ids_and_routes_as_the_plain_test() -> None:
    # The index files automations that name their resource ids literally under
    # those ids; routing must equal the whole interest test of every automation,
    # in registration order, whatever the mix of literal, glob, negated and no match.
    import random

    rng = random.Random(5)
    names = [f"n.{k}" for k in range(6)]
    resources = [f"r.{k}" for k in range(8)]
    specs: list[dict[str, Any]] = [
        {},
        {"prefect.resource.id": "r.1"},
        {"prefect.resource.id": ["r.2", "r.3"]},
        {"prefect.resource.id": "r.*"},
        {"prefect.resource.id": "!r.4"},
        {"prefect.resource.id": "r.5", "color": "blue"},
        {"color": "blue"},
    ]
    index: InterestIndex[int] = InterestIndex()
    matchers: dict[int, list[TriggerMatcher]] = {}
    patterns = [*names, "n.*", "n.1*", "!n.2"]

    def triggers() -> list[TriggerMatcher]:
        found = []
        for _ in range(rng.choice([1, 1, 2])):
            expect = set(rng.sample(patterns, 2)) if rng.random() < 0.9 else set()
            after = set(rng.sample(names, 1)) if rng.random() < 0.2 else set()
            found.append(_matcher(expect=expect, after=after, match=rng.choice(specs)))
        return found

    for key in range(60):
        matchers[key] = triggers()
        index.set(key, matchers[key])
    # Changed and removed keys: a changed one keeps its place, a removed one
    # comes back last.
    for key in rng.sample(range(60), 10):
        matchers[key] = triggers()
        index.set(key, matchers[key])
    for key in rng.sample(range(60), 10):
        del matchers[key]
        index.remove(key)
        if rng.random() < 0.5:
            matchers[key] = triggers()
            index.set(key, matchers[key])
    for _ in range(600):
        labels = {"color": "blue"} if rng.random() < 0.5 else {}
        e = event(rng.choice(names), 0, resource_id=rng.choice(resources), labels=labels)
        expected = [k for k, ms in matchers.items() if any(m.is_interested(e) for m in ms)]
        assert index.route(e) == expected
