"""Tests for the sandboxed action templates: Prefect's context, limits and hostile input."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.templates import (
    MAX_TEMPLATE_CHARS,
    TemplateContext,
    TemplateFailed,
    build_context,
    check_parameters,
    check_template,
    hydrate_parameters,
    parameter_templates,
    render,
    template_names,
)

FLOW_RUN_ID = UUID("0f2a9c1e-5b7d-4e3a-9c1e-2d4f6a8b0c1d")
FLOW_ID = UUID("1b3c5d7e-9f0a-4b2c-8d4e-6f8a0b2c4d6e")
DEPLOYMENT_ID = UUID("2c4d6e8f-0a1b-4c3d-9e5f-7a9b1c3d5e7f")
WORK_QUEUE_ID = UUID("3d5e7f9a-1b2c-4d4e-8f6a-8b0c2d4e6f8a")
EVENT_ID = UUID("4e6f8a0b-2c3d-4e5f-9a7b-9c1d3e5f7a9b")
AUTOMATION_ID = UUID("5e3a1c2b-0d4f-4a6b-8c9d-7e1f2a3b4c5d")
OCCURRED = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
UI = "https://ui.example/"


class FakeClock:
    """A monotonic clock that moves ``step`` seconds every time it is read."""

    def __init__(self, step: float = 0.0) -> None:
        self.t = 100.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.t += self.step
        return self.t


def make_event(payload: dict[str, Any] | None = None) -> Event:
    return Event.model_validate(
        {
            "id": str(EVENT_ID),
            "occurred": OCCURRED,
            "event": "prefect.flow-run.Failed",
            "resource": {
                "prefect.resource.id": f"prefect.flow-run.{FLOW_RUN_ID}",
                "prefect.resource.name": "crimson-otter",
                "prefect.state-name": "Failed",
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
                    "prefect.resource.name": "etl-prod",
                },
                {"prefect.resource.id": "prefect.tag.nightly", "prefect.resource.role": "tag"},
                {"prefect.resource.id": "prefect.tag.db", "prefect.resource.role": "tag"},
                {
                    "prefect.resource.id": "prefect.work-pool.9a8b7c6d",
                    "prefect.resource.role": "work-pool",
                    "prefect.resource.name": "k8s pool",
                },
            ],
            "payload": {"intended": {"from": "RUNNING", "to": "FAILED"}, "retries": 3}
            if payload is None
            else payload,
        }
    )


def make_automation() -> Automation:
    return Automation.model_validate(
        {
            "id": str(AUTOMATION_ID),
            "name": "etl keeps failing",
            "description": "page someone",
            "tags": ["ops"],
            "trigger": {"type": "event", "expect": ["prefect.flow-run.Failed"], "threshold": 3},
            "actions": [{"type": "cancel-flow-run"}],
        }
    )


OBJECTS: dict[str, dict[str, Any]] = {
    "flow_run": {
        "id": str(FLOW_RUN_ID),
        "name": "crimson-otter",
        "parameters": {"day": "2026-03-01", "limit": 10},
        "state": {"type": "FAILED", "name": "Failed"},
    },
    "flow": {"id": str(FLOW_ID), "name": "etl"},
    "deployment": {"id": str(DEPLOYMENT_ID), "name": "etl-prod"},
    "work_queue": {"id": str(WORK_QUEUE_ID), "name": "default"},
    "work_pool": {"id": "9a8b7c6d", "name": "k8s pool"},
}


def context(
    objects: Mapping[str, Mapping[str, Any]] | None = None,
    ui_url: str | None = UI,
    event: Event | None = None,
    labels: Mapping[str, str] | None = None,
) -> TemplateContext:
    return build_context(
        event or make_event(),
        make_automation(),
        OBJECTS if objects is None else objects,
        ui_url,
        labels=labels,
    )


def run(
    source: str,
    ctx: TemplateContext | Mapping[str, Any] | None = None,
    *,
    max_bytes: int = 65_536,
    deadline_s: float = 5.0,
    clock: FakeClock | None = None,
) -> str:
    return render(
        source,
        context() if ctx is None else ctx,
        max_bytes=max_bytes,
        deadline_s=deadline_s,
        now=clock or FakeClock(),
    )


# --- Prefect's context -------------------------------------------------------------------------


def test_event_fields_render_in_prefects_shape() -> None:
    out = run("{{ event.event }}|{{ event.id }}|{{ event.occurred }}|{{ event.resource.id }}")
    assert out == (
        f"prefect.flow-run.Failed|{EVENT_ID}|2026-03-01 09:30:00+00:00|"
        f"prefect.flow-run.{FLOW_RUN_ID}"
    )
    assert run("{{ event.payload.intended.to }} {{ event.payload['retries'] + 1 }}") == "FAILED 4"
    assert run("{{ event.follows }} {{ event.received }}") == "None None"


def test_missing_names_and_attributes_render_empty() -> None:
    assert run("[{{ flow_run.missing.x }}][{{ nope.deeper['y'] }}][{{ nope is defined }}]") == (
        "[][][False]"
    )
    assert run("[{{ task_run.name }}]", context(objects={})) == "[]"


def test_label_iteration_yields_label_value_pairs() -> None:
    out = run("{% for label, value in event.resource %}{{ label }}={{ value }};{% endfor %}")
    assert out == (
        f"prefect.resource.id=prefect.flow-run.{FLOW_RUN_ID};"
        "prefect.resource.name=crimson-otter;prefect.state-name=Failed;"
    )
    assert run("{% for l, v in event.related[0].items() %}{{ v }},{% endfor %}") == (
        f"prefect.flow.{FLOW_ID},flow,etl,"
    )


def test_resource_labels_by_item_get_keys_and_dotted_attributes() -> None:
    assert run("{{ event.resource['prefect.state-name'] }}") == "Failed"
    assert run("{{ event.resource.get('missing', 'dflt') }}|{{ event.resource.get('x') }}") == (
        "dflt|None"
    )
    assert run("{{ event.resource.name }}|{{ event.resource.keys()|length }}") == (
        "crimson-otter|3"
    )
    assert run("{{ event.resource.labels.prefect.resource.name }}") == "crimson-otter"
    assert run("{{ 'prefect.state-name' in event.resource }}") == "True"
    assert run("[{{ event.resource.labels }}]") == "[]"


def test_role_is_a_related_resources_label() -> None:
    assert run("{{ event.related[2].role }}:{{ event.related[2].name }}") == "tag:None"
    assert run("[{{ event.resource.role }}]") == "[]"


def test_related_resources_are_a_list_to_loop_and_filter() -> None:
    out = run("{% for r in event.related if r.role == 'tag' %}{{ r.id }};{% endfor %}")
    assert out == "prefect.tag.nightly;prefect.tag.db;"
    out = run(
        "{{ event.related|selectattr('role', 'equalto', 'flow')|map(attribute='name')|first }}"
    )
    assert out == "etl"
    assert run("{{ event.related|length }}") == "5"


def test_automation_is_plain_data() -> None:
    out = run(
        "{{ automation.id }}|{{ automation.name }}|{{ automation.description }}|"
        "{{ automation.enabled }}|{{ automation.tags|join(',') }}|{{ automation.trigger.type }}|"
        "{{ automation.trigger.threshold }}|{{ automation.actions[0].type }}"
    )
    assert out == f"{AUTOMATION_ID}|etl keeps failing|page someone|True|ops|event|3|cancel-flow-run"


def test_orchestrator_objects_are_dicts_with_attribute_access() -> None:
    out = run("{{ flow_run.state.name }} {{ flow_run.parameters['day'] }} {{ deployment.name }}")
    assert out == "Failed 2026-03-01 etl-prod"
    assert run("{{ flow_run.parameters.limit * 2 }}") == "20"


def test_firing_labels_are_available_as_labels() -> None:
    ctx = context(labels={"prefect.resource.id": "prefect.flow-run.x", "team": "data"})
    assert run("{{ labels.prefect.resource.id }} {{ labels.team }}", ctx) == (
        "prefect.flow-run.x data"
    )


def test_tojson_sorts_keys_and_serialises_events() -> None:
    assert run("{{ event.payload|tojson }}") == (
        '{"intended": {"from": "RUNNING", "to": "FAILED"}, "retries": 3}'
    )
    event = json.loads(run("{{ event|tojson }}"))
    assert event["event"] == "prefect.flow-run.Failed"
    assert event["id"] == str(EVENT_ID)
    assert event["related"][0]["prefect.resource.role"] == "flow"
    assert json.loads(run("{{ event.resource|tojson }}"))["prefect.resource.name"] == (
        "crimson-otter"
    )
    assert json.loads(run("{{ automation|tojson }}"))["name"] == "etl keeps failing"
    assert json.loads(run("{{ flow_run|tojson }}"))["parameters"]["limit"] == 10
    assert run("{{ event.occurred|tojson }}") == '"2026-03-01T09:30:00+00:00"'
    # HTML-unsafe characters are escaped, and the result is still JSON.
    assert json.loads(run("{{ '<a & b>'|tojson }}")) == "<a & b>"


def test_tojson_of_an_undefined_value_fails() -> None:
    with pytest.raises(TemplateFailed, match="'nope' is undefined"):
        run("{{ nope|tojson }}")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ flow_run|ui_url }}", f"{UI}runs/flow-run/{FLOW_RUN_ID}"),
        ("{{ flow|ui_url }}", f"{UI}flows/flow/{FLOW_ID}"),
        ("{{ deployment|ui_url }}", f"{UI}deployments/deployment/{DEPLOYMENT_ID}"),
        ("{{ work_queue|ui_url }}", f"{UI}work-queues/work-queue/{WORK_QUEUE_ID}"),
        # Work pools are linked by name, as Prefect's UI routes them.
        ("{{ work_pool|ui_url }}", f"{UI}work-pools/work-pool/k8s%20pool"),
        ("{{ automation|ui_url }}", f"{UI}automations/automation/{AUTOMATION_ID}"),
        ("{{ event|ui_url }}", f"{UI}events/event/2026-03-01/{EVENT_ID}"),
        ("{{ event.resource|ui_url }}", f"{UI}runs/flow-run/{FLOW_RUN_ID}"),
        ("{{ event.related[1]|ui_url }}", f"{UI}deployments/deployment/{DEPLOYMENT_ID}"),
        ("{{ event.related[4]|ui_url }}", f"{UI}work-pools/work-pool/k8s%20pool"),
        ("{{ event.related[2]|ui_url }}", "None"),  # a tag has no page
        ("{{ 'text'|ui_url }}", "None"),
        ("{{ nope|ui_url }}", "None"),
    ],
)
def test_ui_url_links_to_the_objects_page_in_prefects_ui(source: str, expected: str) -> None:
    assert run(source) == expected


def test_ui_url_without_a_ui_address_renders_none() -> None:
    assert run("{{ flow_run|ui_url }}", context(ui_url=None)) == "None"


def test_ui_url_appends_to_a_base_path() -> None:
    ctx = context(ui_url="https://prefect.example/ui")
    assert run("{{ flow|ui_url }}", ctx) == f"https://prefect.example/ui/flows/flow/{FLOW_ID}"


def test_ui_resource_events_url_links_to_the_filtered_event_feed() -> None:
    assert run("{{ event.related[0]|ui_resource_events_url }}") == (
        f"{UI}events?resource=prefect.flow.{FLOW_ID}"
    )
    assert run("{{ deployment|ui_resource_events_url }}") == (
        f"{UI}events?resource=prefect.deployment.{DEPLOYMENT_ID}"
    )
    assert run("{{ automation|ui_resource_events_url }}") == (
        f"{UI}events?resource=prefect.automation.{AUTOMATION_ID}"
    )
    assert run("{{ event|ui_resource_events_url }}") == "None"


def test_flow_run_id_filter_finds_the_id_in_a_link() -> None:
    source = "{{ 'see https://ui/runs/flow-run/" + str(FLOW_RUN_ID) + " now'|flow_run_id }}"
    assert run(source) == str(FLOW_RUN_ID)
    assert run("{{ 'nothing here'|flow_run_id }}") == "None"


def test_without_an_event_the_event_is_undefined() -> None:
    ctx = build_context(None, make_automation(), {}, None)
    assert run("[{{ event.event }}] {{ automation.name }}", ctx) == "[] etl keeps failing"


def test_build_context_rejects_an_unknown_object_name() -> None:
    with pytest.raises(ValueError, match="unknown template object 'task_run'"):
        build_context(make_event(), make_automation(), {"task_run": {}}, None)


def test_render_takes_a_plain_mapping_of_variables() -> None:
    assert run("{{ a.b }}-{{ c|ui_url }}", {"a": {"b": 1}, "c": {}}) == "1-None"


def test_text_without_expressions_or_statements_is_returned_unchanged() -> None:
    # As in Prefect: not even comments are processed, and a trailing newline stays.
    assert run("plain {# not a comment #}\n") == "plain {# not a comment #}\n"
    assert run("{{ 'x' }}\n") == "x"


def test_autoescape_blocks_escape_expressions_but_not_literal_text() -> None:
    assert run("{% autoescape true %}<b>{{ '<i>' }}</b>{% endautoescape %}<{{ '<' }}") == (
        "<b>&lt;i&gt;</b><<"
    )


def test_ordinary_jinja_still_works() -> None:
    out = run(
        "{% macro tag(x) %}<{{ x }}>{% endmacro %}{{ tag('a') }}"
        "{% set words %}one two{% endset %}{{ words|upper }}"
        "{{ 'a' ~ 1 }}{{ [1, 2] + [3] }}{{ '%s-%d' % ('x', 2) }}{{ '{}!'.format(4) }}"
        "{{ 'ab'|center(4) }}{{ [3, 1, 2]|sort|join }}{{ range(3)|sum }}{{ 2 ** 10 }}"
    )
    assert out == "<a>ONE TWO" + "a1[1, 2, 3]x-24! ab 1233" + "1024"


# --- checking and names ---------------------------------------------------------------------


def test_a_syntax_error_names_its_line() -> None:
    with pytest.raises(ValueError, match=r"^line 3: "):
        check_template("one\ntwo {{ event.event }}\nthree {{ oops ")


def test_a_valid_template_passes_the_check() -> None:
    check_template("{% for r in event.related %}{{ r.id }}{% endfor %}")


def test_an_over_long_template_is_rejected() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_TEMPLATE_CHARS}"):
        check_template("x" * (MAX_TEMPLATE_CHARS + 1))
    with pytest.raises(TemplateFailed, match=f"at most {MAX_TEMPLATE_CHARS}"):
        run("{{ 1 }}" + "x" * MAX_TEMPLATE_CHARS)


def test_more_than_ten_loops_are_rejected_like_prefect() -> None:
    ten = "{% for x in y %}{% endfor %}\n" * 10
    check_template(ten)
    with pytest.raises(ValueError, match="line 11: the template has 11 for loops"):
        check_template(ten + "{% for x in y %}{% endfor %}")


def test_loops_nested_three_deep_are_rejected_like_prefect() -> None:
    check_template("{% for a in b %}{% for c in d %}{% endfor %}{% endfor %}")
    with pytest.raises(ValueError, match="line 3: for loops are nested 3 deep"):
        check_template(
            "{% for a in b %}\n{% for c in d %}\n{% for e in f %}{% endfor %}{% endfor %}"
            "{% endfor %}"
        )


def test_an_unknown_filter_passes_the_check_but_fails_the_render() -> None:
    # Prefect only parses templates when saving; filters are looked up when rendering.
    check_template("{{ x|no_such_filter }}")
    with pytest.raises(TemplateFailed, match="No filter named 'no_such_filter'"):
        run("{{ x|no_such_filter }}")


def test_template_names_are_the_names_read_not_those_set() -> None:
    source = (
        "{{ flow_run.name }}{% set x = 1 %}{{ x }}"
        "{% for d in deployment.tags %}{{ d }}{% endfor %}{{ event|ui_url }}"
    )
    assert template_names(source) == {"flow_run", "deployment", "event"}
    assert template_names("no names") == frozenset()


def test_template_names_of_an_invalid_template_raise() -> None:
    with pytest.raises(ValueError, match="line 1"):
        template_names("{{ flow_run.name ")


# --- limits ---------------------------------------------------------------------------------


def test_output_over_max_bytes_fails_and_at_the_limit_passes() -> None:
    assert run("{{ 'x' * 10 }}", max_bytes=10) == "x" * 10
    with pytest.raises(TemplateFailed, match="output is larger than 9 bytes"):
        run("{{ 'x' * 10 }}", max_bytes=9)
    with pytest.raises(TemplateFailed, match="larger than 5 bytes"):
        run("{{ 'é' * 3 }}", max_bytes=5)  # six bytes of UTF-8
    with pytest.raises(TemplateFailed, match="larger than 5 bytes"):
        run("no template at all", max_bytes=5)


def test_rendering_stops_as_soon_as_the_output_is_too_large() -> None:
    # The error at the end is never reached: output is streamed and cut off.
    source = "{% for i in range(100) %}0123456789{% if i == 99 %}{{ 1 / 0 }}{% endif %}{% endfor %}"
    with pytest.raises(TemplateFailed, match="larger than 100 bytes"):
        run(source, max_bytes=100)


def test_running_past_the_time_budget_fails() -> None:
    clock = FakeClock(step=0.01)
    source = "{% for a in range(100) %}{% for b in range(100) %}{{ b }}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateFailed, match="took longer than 1 s"):
        run(source, deadline_s=1.0, clock=clock)
    assert clock.reads < 400  # it stopped at the deadline, not at the end


def test_loops_with_empty_bodies_still_see_the_clock() -> None:
    clock = FakeClock(step=0.01)
    source = "{% set r = range(100)|list %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateFailed, match="took longer"):
        run(source, deadline_s=1.0, clock=clock)


def test_sum_sees_the_clock_at_every_item() -> None:
    clock = FakeClock(step=0.01)
    with pytest.raises(TemplateFailed, match="took longer"):
        run("{{ range(100)|batch(1)|sum(start=[]) }}", deadline_s=0.5, clock=clock)


def test_a_quick_template_renders_within_its_budget() -> None:
    clock = FakeClock(step=0.001)
    assert run("{{ event.event }}", deadline_s=1.0, clock=clock) == "prefect.flow-run.Failed"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 'a' * 10**9 }}", "value larger than"),
        ("{{ [1] * 10**9 }}", "value larger than"),
        ("{{ 10**9 * 'a' }}", "value larger than"),
        ("{{ 9 ** (9 ** 9) }}", "number over"),
        ("{{ 2 ** 100000 }}", "number over"),
        ("{{ (2 ** 10000) * (2 ** 10000) }}", "number over"),
        ("{{ range(101)|list }}", "range"),
        ("{{ range(10**20) }}", "range"),
        ("{{ 'a'|center(10**9) }}", "center"),
        ("{{ 'a'.center(10**9) }}", "center"),
        ("{{ 'a'.ljust(10**9) }}", "ljust"),
        ("{{ 'a'.zfill(10**9) }}", "zfill"),
        ("{{ ('a\t' * 100).expandtabs(10**9) }}", "value larger than"),
        ("{{ '%0999999999d' % 1 }}", "value larger than"),
        ("{{ '%*d' % (10**9, 1) }}", "'\\*' widths"),
        ("{{ '%0999999999d'.encode() % 1 }}", "value larger than"),
        ("{{ '%0999999999d'|format(1) }}", "value larger than"),
        ("{{ '{:>999999999}'.format(1) }}", "value larger than"),
        ("{{ '{:{w}}'.format(1, w=10**9) }}", "nested fields"),
        ("{{ '{0:>999999999}'.format_map({}) }}", "value larger than"),
        ("{{ (1).to_bytes(10**9, 'big') }}", "to_bytes"),
        ("{{ 'ab'|replace('a', 'x' * 2000)|replace('x', 'y' * 2000) }}", "value larger than"),
        ("{{ 'ab'.replace('a', 'x' * 2000).replace('x', 'y' * 2000) }}", "value larger than"),
        ("{{ ('x' * 100000).join(['a'] * 100) }}", "value larger than"),
        ("{{ (['x' * 100000] * 20)|join }}", "value larger than"),
        ("{{ (['x' * 100000] * 10)|join('-' * 10000) }}", "value larger than"),
        ("{{ [1]|batch(10**9, 'x')|list }}", "batch"),
        ("{{ [1]|slice(10**9)|list }}", "slice"),
        ("{{ ('a\n' * 1000)|indent(10**6) }}", "value larger than"),
        ("{{ 'a'|indent(10**9) }}", "indent"),
        ("{{ ('a ' * 1000)|wordwrap(1, wrapstring='x' * 10000) }}", "value larger than"),
        ("{{ lipsum(10**9) }}", "lipsum"),
        ("{{ event.payload|tojson(indent=10**9) }}", "indent"),
        (
            "{% set ns = namespace(x='ab') %}{% for i in range(40) %}"
            "{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}",
            "value larger than",
        ),
        (
            "{% set ns = namespace(x=[1, 2]) %}{% for i in range(60) %}"
            "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x|length }}",
            "value larger than",
        ),
        (
            "{% set ns = namespace(x={'a': 1}) %}{% for i in range(60) %}"
            "{% set ns.x = {'a': ns.x, 'b': ns.x} %}{% endfor %}{{ ns.x|length }}",
            "value larger than",
        ),
        (
            "{% set ns = namespace(x=('a', 'b')) %}{% for i in range(60) %}"
            "{% set ns.x = (ns.x, ns.x) %}{% endfor %}{{ ns.x|length }}",
            "value larger than",
        ),
        (
            "{% set ns = namespace(x='ab') %}{% for i in range(60) %}"
            "{% set ns.x = ns.x|list|string %}{% endfor %}{{ ns.x|length }}",
            "value larger than",
        ),
        (
            "{% set s = 'x' * 100000 %}{% macro m1() %}{{ s }}{{ s }}{% endmacro %}"
            "{% macro m2() %}{{ m1() }}{{ m1() }}{% endmacro %}"
            "{% macro m3() %}{{ m2() }}{{ m2() }}{% endmacro %}"
            "{% macro m4() %}{{ m3() }}{{ m3() }}{% endmacro %}{{ m4()|length }}",
            "value larger than|produced more than",
        ),
    ],
)
def test_building_huge_values_is_refused(source: str, reason: str) -> None:
    with pytest.raises(TemplateFailed, match=reason):
        run(source, max_bytes=1000)


def test_text_built_inside_blocks_counts_against_the_limit() -> None:
    # A filter block holds its whole body in memory; its text is counted as it is built.
    source = (
        "{% set s = 'x' * 100000 %}"
        "{% filter upper %}{% for c in s %}{{ s }}{% endfor %}{% endfilter %}"
    )
    with pytest.raises(TemplateFailed, match="produced more than"):
        run(source, max_bytes=1000)
    literal = "{% set s = 'x' * 100000 %}{% set b %}{% for c in s %}" + "y" * 100 + "{% endfor %}"
    with pytest.raises(TemplateFailed, match="produced more than"):
        run(literal + "{% endset %}{{ b|length }}", max_bytes=1000)


def test_endless_recursion_fails_cleanly() -> None:
    with pytest.raises(TemplateFailed, match="RecursionError"):
        run("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")


def test_an_error_while_rendering_names_its_line() -> None:
    with pytest.raises(TemplateFailed, match=r"^line 2: ZeroDivisionError"):
        run("ok {{ 1 }}\n{{ 1 / 0 }}")
    with pytest.raises(TemplateFailed, match=r"^line 3: 'nope' is undefined"):
        run("\n\n{{ nope() }}")


# --- hostile templates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ range.__self__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ self.__dict__ }}",
        "{{ event.__class__ }}",
        "{{ event._event }}",
        "{{ event.resource._labels }}",
        "{{ flow_run._kind }}",
        "{{ automation._automation }}",
        "{{ event.payload.__class__.__base__ }}",
        "{{ config }}{{ request }}{{ settings }}",
        "{{ namespace.__init__ }}",
        "{{ '{0.__class__}'.format(event) }}",
        "{{ '{0.__class__.__mro__}'.format('') }}",
        "{{ '{0._event}'.format(event) }}",
        "{{ event|attr('__class__') }}",
        "{{ event.payload|attr('__class__') }}",
        "{% macro m() %}{% endmacro %}{{ m._func }}",
        "{% for x in event.related %}{{ loop.__class__ }}{% endfor %}",
        "{{ event.occurred.__class__ }}",
        "{{ event.resource.labels.__class__ }}",
    ],
)
def test_python_internals_render_as_nothing(source: str) -> None:
    assert run(source) == ""


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed"),
        ("{{ cycler.__init__.__globals__['os'].system('id') }}", "not allowed"),
        ("{{ event.payload.update({'x': 1}) }}", "not allowed"),
        ("{{ event.payload.pop('retries') }}", "not allowed"),
        ("{{ event.payload.intended.clear() }}", "not allowed"),
        ("{{ event.related.append(1) }}", "not allowed"),
        ("{{ event.related.sort() }}", "not allowed"),
        ("{{ flow_run.update({}) }}", "not allowed"),
        ("{{ flow_run.parameters.setdefault('x', 1) }}", "not allowed"),
        ("{{ automation.tags.append('x') }}", "not allowed"),
        ("{{ event.occurred.now() }}", "not allowed"),
        ("{{ event.occurred.today() }}", "not allowed"),
        ("{{ event.occurred.utcnow() }}", "not allowed"),
        ("{% import 'os' as os %}", "cannot include, import or extend"),
        ("{% from 'os' import path %}", "cannot include, import or extend"),
        ("{% include '/etc/passwd' %}", "cannot include, import or extend"),
        ("{% include ['/etc/passwd', '/etc/hosts'] %}", "cannot include, import or extend"),
        ("{% extends '/etc/passwd' %}", "cannot include, import or extend"),
        ("{{ request.application.__globals__.__builtins__.__import__('os') }}", "undefined"),
    ],
)
def test_reaching_for_python_internals_fails(source: str, reason: str) -> None:
    with pytest.raises(TemplateFailed, match=reason):
        run(source)


def test_mutation_attempts_leave_the_context_unchanged() -> None:
    event = make_event()
    ctx = context(event=event)
    for source in (
        "{{ event.payload.update({'x': 1}) }}",
        "{% set _ = event.payload.intended.pop('to') %}",
        "{{ event.related.append(1) }}",
        "{{ flow_run.state.update({'name': 'Completed'}) }}",
    ):
        with pytest.raises(TemplateFailed):
            run(source, ctx)
    assert event.payload == {"intended": {"from": "RUNNING", "to": "FAILED"}, "retries": 3}
    assert len(event.related) == 5
    assert run("{{ flow_run.state.name }}", ctx) == "Failed"


# --- run-deployment parameters (hydration) -------------------------------------------------


def hydrate(value: Any, ctx: TemplateContext | None = None) -> Any:
    return hydrate_parameters(value, lambda source: run(source, ctx))


def test_jinja_values_render_as_strings() -> None:
    value = {"name": {"__prefect_kind": "jinja", "template": "{{ flow_run.parameters.limit }}"}}
    assert hydrate(value) == {"name": "10"}


def test_a_lone_expression_keeps_its_type() -> None:
    value = {
        "limit": "{{ flow_run.parameters.limit }}",
        "params": "{{ flow_run.parameters }}",
        "retried": " {{ event.payload.retries > 2 }} ",
        "nothing": "{{ none }}",
        "trimmed": "{{- event.payload.retries -}}",
        "negative": "{{ -1 }}",
    }
    assert hydrate(value) == {
        "limit": 10,
        "params": {"day": "2026-03-01", "limit": 10},
        "retried": True,
        "nothing": None,
        "trimmed": 3,
        "negative": -1,
    }


def test_text_around_an_expression_renders_as_a_string() -> None:
    assert hydrate({"note": "run {{ flow_run.name }} failed"}) == {
        "note": "run crimson-otter failed"
    }
    assert hydrate({"two": "{{ 1 }}{{ 2 }}"}) == {"two": "12"}


def test_a_lone_expression_that_is_undefined_fails() -> None:
    with pytest.raises(TemplateFailed, match=r"^limit: .*'missing'"):
        hydrate({"limit": "{{ flow_run.parameters.missing }}"})


def test_json_values_are_parsed_and_may_be_rendered_first() -> None:
    value = {
        "plain": {"__prefect_kind": "json", "value": '{"a": [1, 2]}'},
        "rendered": {
            "__prefect_kind": "json",
            "value": {"__prefect_kind": "jinja", "template": '{"n": {{ event.payload.retries }}}'},
        },
        "not_a_string": {"__prefect_kind": "json", "value": 5},
    }
    assert hydrate(value) == {"plain": {"a": [1, 2]}, "rendered": {"n": 3}, "not_a_string": 5}


def test_none_values_pass_their_value_through_hydrated() -> None:
    inner = {"__prefect_kind": "jinja", "template": "{{ event.payload.retries }}"}
    value = {"kept": {"__prefect_kind": "none", "value": {"x": inner, "y": "{{ as is }}"}}}
    # As in Prefect, plain strings inside a kind are not upgraded to templates.
    assert hydrate(value) == {"kept": {"x": "3", "y": "{{ as is }}"}}


def test_empty_json_and_workspace_variable_values_are_dropped() -> None:
    value = {
        "a": {"__prefect_kind": "json"},
        "b": [1, {"__prefect_kind": "workspace_variable"}, 2],
        "c": 1,
    }
    assert hydrate(value) == {"b": [1, 2], "c": 1}
    assert hydrate({"__prefect_kind": "json"}) == {}


def test_an_unknown_kind_gives_its_value_as_it_is() -> None:
    value = {"a": {"__prefect_kind": "mystery", "value": {"x": "{{ not rendered }}"}}}
    assert hydrate(value) == {"a": {"x": "{{ not rendered }}"}}


def test_workspace_variables_are_not_supported() -> None:
    value = {"a": {"__prefect_kind": "workspace_variable", "variable_name": "token"}}
    check_parameters(value)  # valid, as in Prefect
    with pytest.raises(TemplateFailed, match="a: workspace variables are not supported"):
        hydrate(value)


def test_hydration_walks_nested_dicts_and_lists() -> None:
    value = {
        "outer": {"inner": ["{{ event.payload.retries }}", "x", {"deep": "{{ flow.name }}"}]},
        "untouched": [1, 2.5, None, True],
    }
    assert hydrate(value) == {
        "outer": {"inner": [3, "x", {"deep": "etl"}]},
        "untouched": [1, 2.5, None, True],
    }


def test_a_failure_while_hydrating_names_the_path() -> None:
    value = {"a": [{"b": {"__prefect_kind": "jinja", "template": "{{ 1 / 0 }}"}}]}
    with pytest.raises(TemplateFailed, match=r"^a\[0\]\.b: line 1: ZeroDivisionError"):
        hydrate(value)
    bad_json = {"a": {"__prefect_kind": "json", "value": "{nope"}}
    with pytest.raises(TemplateFailed, match="a: Invalid JSON"):
        hydrate(bad_json)


def test_check_parameters_reports_every_bad_path() -> None:
    value = {
        "a": {"b": "{{ oops "},
        "c": {"__prefect_kind": "json", "value": "{nope"},
        "d": [{"__prefect_kind": "jinja"}],
        "e": {"__prefect_kind": "none"},
        "ok": {
            "__prefect_kind": "json",
            "value": {"__prefect_kind": "jinja", "template": "{{ 1 }}"},
        },
    }
    with pytest.raises(ValueError) as info:
        check_parameters(value)
    message = str(info.value)
    assert "a.b: Invalid jinja: line 1:" in message
    assert "c: Invalid JSON" in message
    assert "d[0]: Missing 'template' key" in message
    assert "e: Missing 'value' key" in message
    assert len(message.split("; ")) == 4  # the valid "ok" value is not among them
    check_parameters({"x": 1, "y": "{{ flow_run.name }}", "z": None})


def test_parameter_templates_are_the_templates_to_be_rendered() -> None:
    value = {
        "a": "{{ flow_run.name }}",
        "b": "text {{ deployment.name }}",
        "c": {"__prefect_kind": "jinja", "template": "{{ work_pool.name }}"},
        "d": "no template",
    }
    templates = parameter_templates(value)
    assert templates == [
        "{{ (flow_run.name) | tojson }}",
        "text {{ deployment.name }}",
        "{{ work_pool.name }}",
    ]
    assert set().union(*(template_names(t) for t in templates)) == {
        "flow_run",
        "deployment",
        "work_pool",
    }
