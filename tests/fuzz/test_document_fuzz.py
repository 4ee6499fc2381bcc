"""Fuzzing automation documents: mutations of valid ones through the model and the loader.

Wrong types, unknown fields, bad ``within``, deep compound/sequence trees,
huge thresholds and bad action types must fail with ``ValidationError``
(the model) or ``ValidationFailed`` (a file), naming the field; nothing else
may escape. A document that does validate must survive what the daemon does
with it next: stored as JSON and read back, and evaluated on an event.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from marmot.documents import DocumentError, load_automations
from marmot.engine.errors import ValidationFailed
from marmot.engine.models.actions import ACTION_TYPES
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import MAX_EVENT_NAME, Event
from marmot.engine.models.triggers import CompoundTrigger, SequenceTrigger, Trigger
from marmot.engine.triggers.evaluator import Evaluator

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# The deepest trigger tree the property tests build: deeper ones are refused
# (see test_a_trigger_tree_too_deep_to_read_back_is_refused).
MAX_TREE_DEPTH = 30
# The longest window the property tests keep: longer ones are refused
# (see test_a_window_past_the_calendar_is_refused).
MAX_SANE_WITHIN = timedelta(days=365 * 1000)

BASES: list[dict[str, Any]] = [
    {
        "name": "failures per deployment",
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "match_related": {"prefect.resource.role": "deployment"},
            "expect": ["prefect.flow-run.Failed"],
            "for_each": ["related:deployment:prefect.resource.id"],
            "threshold": 3,
            "within": 60,
        },
        "actions": [{"type": "do-nothing"}],
    },
    {
        "name": "stuck run",
        "trigger": {
            "posture": "Proactive",
            "after": ["prefect.flow-run.Running"],
            "expect": ["prefect.flow-run.Completed", "prefect.flow-run.Failed"],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": "PT30S",
        },
        "actions": [
            {"type": "cancel-flow-run"},
            {"type": "call-webhook", "block_document_id": "00000000-0000-0000-0000-000000000001"},
        ],
        "actions_on_resolve": [{"type": "do-nothing"}],
    },
    {
        "name": "compound",
        "enabled": False,
        "tags": ["ops"],
        "trigger": {
            "type": "compound",
            "require": 2,
            "within": "00:10:00",
            "triggers": [
                {"type": "event", "expect": ["a.happened"], "threshold": 1},
                {"type": "event", "expect": ["b.happened"], "threshold": 2, "within": 30},
                {"type": "sequence", "triggers": [{"expect": ["c.1"]}, {"expect": ["c.2"]}]},
            ],
        },
        "actions_on_trigger": [
            {
                "type": "run-deployment",
                "source": "selected",
                "deployment_id": "00000000-0000-0000-0000-000000000002",
                "parameters": {"x": 1},
            },
            {"type": "pause-automation", "source": "inferred"},
        ],
    },
    *yaml.safe_load((REPO / "configs/examples/automations.yaml").read_text())["automations"],
]
for _base in BASES:  # a broken base would make every mutation look like a failure
    Automation.model_validate(_base)

names = st.text(max_size=12)
hostile_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([-1, 0, 2**31, 2**63, 2**64, 10**100])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | st.text(max_size=20)
    | st.sampled_from(["", "PT5S", "PT-5S", "P1Y", "00:00:05", "5 minutes", "1e9", "-1", "∞"])
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
odd_within: st.SearchStrategy[Any] = st.sampled_from(
    [0, 5, 9.5, 10, -1, 2**31, 2**40, 1e300, math.nan, math.inf, "PT5S", "PT-5S", "P1Y",
     "P1D", "00:00:05", "25:61:61", "five", "", None, True, [], {}]
)  # fmt: skip


# ---------------------------------------------------------------- mutations


Draw = Callable[[st.SearchStrategy[Any]], Any]


def _containers(value: Any) -> list[dict[str, Any] | list[Any]]:
    """Every map and list in a document, itself included."""
    found: list[dict[str, Any] | list[Any]] = []
    if isinstance(value, dict):
        found.append(value)
        for child in value.values():
            found.extend(_containers(child))
    elif isinstance(value, list):
        found.append(value)
        for child in value:
            found.extend(_containers(child))
    return found


def _triggers(value: Any) -> list[dict[str, Any]]:
    """Every trigger map in a trigger tree."""
    if not isinstance(value, dict):
        return []
    found = [value]
    children = value.get("triggers")
    if isinstance(children, list):
        for child in children:
            found.extend(_triggers(child))
    return found


def replace_a_value(draw: Draw, doc: dict[str, Any]) -> None:
    container = draw(st.sampled_from(_containers(doc)))
    if not container:
        return
    if isinstance(container, dict):
        key = draw(st.sampled_from(sorted(container)))
        container[key] = draw(hostile_values)
    else:
        container[draw(st.integers(0, len(container) - 1))] = draw(hostile_values)


def delete_a_key(draw: Draw, doc: dict[str, Any]) -> None:
    maps = [c for c in _containers(doc) if isinstance(c, dict) and c]
    if not maps:
        return
    container = draw(st.sampled_from(maps))
    del container[draw(st.sampled_from(sorted(container)))]


def add_an_unknown_field(draw: Draw, doc: dict[str, Any]) -> None:
    maps = [c for c in _containers(doc) if isinstance(c, dict)]
    container = draw(st.sampled_from(maps))
    container[draw(names)] = draw(hostile_values)


def set_an_odd_within(draw: Draw, doc: dict[str, Any]) -> None:
    triggers = _triggers(doc.get("trigger"))
    if triggers:
        draw(st.sampled_from(triggers))["within"] = draw(odd_within)


def set_an_odd_threshold(draw: Draw, doc: dict[str, Any]) -> None:
    triggers = _triggers(doc.get("trigger"))
    if not triggers:
        return
    draw(st.sampled_from(triggers))["threshold"] = draw(
        st.sampled_from([-1, 0, 2**31, 2**63, 2**64, 10**100, 1.5, "3", "many", None])
    )


def nest_the_trigger(draw: Draw, doc: dict[str, Any]) -> None:
    for _ in range(draw(st.integers(1, MAX_TREE_DEPTH))):
        kind = draw(st.sampled_from(["compound", "sequence"]))
        parent: dict[str, Any] = {"type": kind, "triggers": [doc.get("trigger")]}
        if kind == "compound":
            parent["require"] = draw(st.sampled_from(["any", "all", 1, 0, -1, 2, 2**64, "some"]))
        if draw(st.booleans()):
            parent["within"] = draw(odd_within)
        doc["trigger"] = parent


def break_an_action(draw: Draw, doc: dict[str, Any]) -> None:
    kind = draw(st.sampled_from(["actions", "actions_on_trigger", "actions_on_resolve"]))
    action: dict[str, Any] = {
        "type": draw(st.sampled_from(sorted(ACTION_TYPES)) | names | hostile_scalars)
    }
    for _ in range(draw(st.integers(0, 3))):
        field = draw(
            st.sampled_from(["source", "deployment_id", "parameters", "state", "subject", "body"])
            | names
        )
        action[field] = draw(hostile_values)
    actions = doc.get(kind)
    doc[kind] = [*actions, action] if isinstance(actions, list) else [action]


def set_an_odd_posture(draw: Draw, doc: dict[str, Any]) -> None:
    triggers = _triggers(doc.get("trigger"))
    if not triggers:
        return
    draw(st.sampled_from(triggers))["posture"] = draw(
        st.sampled_from(["Reactive", "Proactive", "reactive", "Metric", "", None, 1])
    )


MUTATIONS = (
    replace_a_value,
    delete_a_key,
    add_an_unknown_field,
    set_an_odd_within,
    set_an_odd_threshold,
    nest_the_trigger,
    break_an_action,
    set_an_odd_posture,
)


@st.composite
def mutated_documents(draw: Draw) -> dict[str, Any]:
    """A valid document with one to three mutations applied."""
    doc: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        draw(st.sampled_from(MUTATIONS))(draw, doc)
    return doc


# ---------------------------------------------------------------- checks


def check_validation_error(exc: ValidationError) -> None:
    """Every error names the field it is about, unless it is about the whole document."""
    errors = exc.errors(include_url=False)
    assert errors
    for error in errors:
        assert error["msg"], error
        if not error["loc"]:
            # Not a map at all, or a rule over the whole automation, which says
            # which parts clash (a run-deployment action and the trigger).
            assert error["type"] == "model_type" or "deployment" in error["msg"], error


def tree_depth(trigger: Trigger) -> int:
    if isinstance(trigger, CompoundTrigger | SequenceTrigger):
        return 1 + max(tree_depth(child) for child in trigger.triggers)
    return 1


def longest_within(trigger: Trigger) -> timedelta:
    own = trigger.within or timedelta(0)
    if isinstance(trigger, CompoundTrigger | SequenceTrigger):
        return max([own, *(longest_within(child) for child in trigger.triggers)])
    return own


def is_sane(automation: Automation) -> bool:
    """Whether an automation is clear of the limits tested at the end of this module."""
    return (
        tree_depth(automation.trigger) <= MAX_TREE_DEPTH
        and longest_within(automation.trigger) <= MAX_SANE_WITHIN
    )


def check_usable(automation: Automation) -> None:
    """What the daemon does next with a new automation: store it, read it, evaluate it."""
    stored = automation.model_dump_json()
    read_back = Automation.model_validate_json(stored).model_dump_json()
    assert _canonical(json.loads(read_back)) == _canonical(json.loads(stored))
    evaluator = Evaluator(automation)
    names_expected = sorted(
        name
        for trigger in _walk(automation.trigger)
        for name in (*trigger.expect, *trigger.after)
        if name and "*" not in name and len(name) <= MAX_EVENT_NAME
    ) or ["fuzz.anything"]
    event = Event(
        occurred=NOW,
        event=names_expected[0],
        resource={"prefect.resource.id": "prefect.flow-run.1"},
        related=[
            {"prefect.resource.id": "prefect.deployment.1", "prefect.resource.role": "deployment"},
        ],
    )
    evaluator.apply([event])
    evaluator.next_deadline()
    evaluator.explain()  # what automations.explain returns
    evaluator.advance(NOW + timedelta(hours=1), NOW + timedelta(hours=1))
    evaluator.snapshot()


def _canonical(value: Any) -> Any:
    """JSON with every array sorted: sets come out of a model in any order."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def _walk(trigger: Trigger) -> list[Any]:
    if isinstance(trigger, CompoundTrigger | SequenceTrigger):
        return [leaf for child in trigger.triggers for leaf in _walk(child)]
    return [trigger]


# ---------------------------------------------------------------- the model


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_a_mutated_document_validates_or_fails_with_field_paths(doc: dict[str, Any]) -> None:
    try:
        automation = Automation.model_validate(doc)
    except ValidationError as exc:
        check_validation_error(exc)
        return
    assume(is_sane(automation))
    check_usable(automation)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries({}, optional={"name": hostile_values, "trigger": hostile_values})
    | st.dictionaries(names, hostile_values, max_size=6)
    | hostile_values
)
def test_any_value_at_all_validates_or_fails_with_field_paths(value: Any) -> None:
    try:
        automation = Automation.model_validate(value)
    except ValidationError as exc:
        check_validation_error(exc)
        return
    check_usable(automation)


# ---------------------------------------------------------------- the loader


# JSON that escapes a character past the BMP (a surrogate pair) hits a known
# bug: see test_a_json_file_with_escaped_emoji_loads_them_whole.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def write(tmp: Path, data: Any, style: str) -> Path:
    path = tmp / f"automations.{'json' if style == 'json' else 'yaml'}"
    if style == "json":
        # ASCII: a raw DEL or C1 control character is refused by YAML (see
        # test_hostile_yaml_fails_as_a_document_error).
        text = json.dumps(data)
        assume(_ESCAPED_SURROGATE.search(text) is None)
    else:
        text = yaml.safe_dump(data, allow_unicode=style == "yaml-unicode")
    path.write_text(text, encoding="utf-8")
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(mutated_documents(), min_size=1, max_size=3),
    st.sampled_from(["one", "list", "automations"]),
    st.sampled_from(["yaml", "yaml-unicode", "json"]),
)
def test_a_mutated_file_loads_or_fails_naming_file_line_and_field(
    tmp_path_factory: pytest.TempPathFactory,
    docs: list[dict[str, Any]],
    layout: str,
    style: str,
) -> None:
    data: Any = {"one": docs[0], "list": docs, "automations": {"automations": docs}}[layout]
    path = write(tmp_path_factory.mktemp("docs"), data, style)
    try:
        loaded = load_automations(path)
    except DocumentError as exc:
        assert exc.path == str(path)
        assert exc.field or exc.line is not None, exc
        assert isinstance(exc.details, dict)
        return
    expected = docs[:1] if layout == "one" else docs
    assert len(loaded) == len(expected)
    for automation in loaded:
        if is_sane(automation):
            check_usable(automation)


# What YAML reads at all; other characters fail as document errors (see
# test_hostile_yaml_fails_as_a_document_error).
yaml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cn"), whitelist_characters="\t\n\r"),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(
    yaml_text
    | st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(["name: x\ntrigger: ", "- ", "{", "automations:\n  - "]),
        yaml_text,
    )
)
def test_any_printable_text_loads_or_fails_as_a_document_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("text") / "automations.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ValidationFailed):
        load_automations(path)


def test_bytes_that_are_not_utf8_fail_as_a_document_error(tmp_path: Path) -> None:
    path = tmp_path / "automations.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(DocumentError, match="not UTF-8"):
        load_automations(path)


def test_valid_json_that_yaml_refuses_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "automations.json"
    # A raw DEL is fine in JSON, not in YAML.
    path.write_text('{"name": "a\x7fb", "trigger": {}}', encoding="utf-8")
    (automation,) = load_automations(path)
    assert automation.name == "a\x7fb"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "automations: " + "[" * 5000 + "]" * 5000,
            id="deep-flow-list",
        ),
        pytest.param(
            "\n".join(" " * i + "- " for i in range(3000)),
            id="deep-block-list",
        ),
        pytest.param(
            "name: a\x00b",
            id="nul-character",
        ),
        pytest.param(
            "name: x\ntrigger: {type: event, threshold: " + "9" * 5000 + "}",
            id="int-past-python-digit-limit",
        ),
        pytest.param("!!python/object/apply:os.system ['true']", id="python-tag"),
        pytest.param("&a [*a]", id="recursive-alias"),
        pytest.param("---\n" * 5000, id="many-empty-documents"),
    ],
)
def test_hostile_yaml_fails_as_a_document_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "automations.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DocumentError):
        load_automations(path)


# ---------------------------------------------------------------- limits


def _nested(depth: int) -> dict[str, Any]:
    trigger: dict[str, Any] = {"type": "event", "expect": ["x"], "threshold": 1}
    for _ in range(depth):
        trigger = {"type": "compound", "triggers": [trigger]}
    return {"name": "deep", "trigger": trigger}


@pytest.mark.parametrize("depth", [99, 250])
def test_a_trigger_tree_too_deep_to_read_back_is_refused(depth: int) -> None:
    try:
        automation = Automation.model_validate(_nested(depth))
    except ValidationError as exc:
        check_validation_error(exc)
        return
    check_usable(automation)


@pytest.mark.parametrize(
    ("within", "posture"), [(2**38, "Reactive"), (86_400 * 999_999_999, "Proactive")]
)
def test_a_window_past_the_calendar_is_refused(within: int, posture: str) -> None:
    doc = {
        "name": "long window",
        "trigger": {
            "posture": posture,
            "after": ["x"] if posture == "Proactive" else [],
            "expect": ["x"],
            "threshold": 2,
            "within": within,
        },
    }
    try:
        automation = Automation.model_validate(doc)
    except ValidationError as exc:
        check_validation_error(exc)
        return
    check_usable(automation)


def test_a_json_file_with_escaped_emoji_loads_them_whole(tmp_path: Path) -> None:
    doc = {**BASES[0], "name": "on fire \N{FIRE}"}
    path = tmp_path / "automations.json"
    path.write_text(json.dumps(doc), encoding="ascii")
    [automation] = load_automations(path)
    assert automation.name == "on fire \N{FIRE}"
