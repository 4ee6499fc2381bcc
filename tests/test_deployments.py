"""Reading a ``prefect.yaml``'s deployment triggers into the automations ``prefect deploy``
would create: trigger specs, default names, owners, the run-deployment action, selection,
and errors that name the file, the line and the field."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from pydantic import TypeAdapter

from marmot.deployment_ids import DeploymentRef, PrefectDeploymentResolver
from marmot.deployments import (
    DeploymentTriggers,
    apply_deployment_triggers,
    is_prefect_yaml,
    load_deployment_triggers,
)
from marmot.documents import DocumentError
from marmot.engine.errors import ValidationFailed
from marmot.engine.models.actions import RunDeployment
from marmot.engine.models.automations import Automation
from marmot.engine.models.triggers import (
    CompoundTrigger,
    EventTrigger,
    MetricTrigger,
    MetricTriggerOperator,
    Posture,
    PrefectMetric,
    SequenceTrigger,
)
from marmot.transport.client import Client

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "prefect.yaml"
INGEST = UUID("0f2a9c1e-3b4d-4e5f-8a6b-7c8d9e0f1a2b")
REPORT = UUID("5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f")


class Ids:
    """A resolver with fixed ids that records what it was asked."""

    def __init__(self, ids: dict[str, UUID]) -> None:
        self.ids = ids
        self.asked: list[list[DeploymentRef]] = []

    def resolve(self, refs: Sequence[DeploymentRef]) -> dict[DeploymentRef, UUID]:
        self.asked.append(list(refs))
        return {ref: self.ids[ref.name] for ref in refs}


class ByRef:
    """A resolver with a fixed id per (name, entrypoint)."""

    def __init__(self, ids: dict[DeploymentRef, UUID]) -> None:
        self.ids = ids

    def resolve(self, refs: Sequence[DeploymentRef]) -> dict[DeploymentRef, UUID]:
        return {ref: self.ids[ref] for ref in refs}


class NeverAsked:
    """A resolver that fails the test if it is used."""

    def resolve(self, refs: Sequence[DeploymentRef]) -> dict[DeploymentRef, UUID]:
        raise AssertionError(f"the resolver was asked for {refs}")


def write(tmp_path: Path, text: str, name: str = "prefect.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of the first line containing ``needle``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} is not in {path}")


def load(path: Path, **kwargs: Any) -> list[DeploymentTriggers]:
    return load_deployment_triggers(path, Ids({"ingest": INGEST, "report": REPORT}), **kwargs)


def run_action(automation: Automation) -> RunDeployment:
    (action,) = automation.actions
    assert isinstance(action, RunDeployment)
    return action


# -- a realistic file ------------------------------------------------------------------


def test_every_deployment_with_triggers_loads_in_file_order() -> None:
    loaded = load(EXAMPLE)

    assert [(d.name, d.entrypoint, d.deployment_id) for d in loaded] == [
        ("ingest", "flows/ingest.py:ingest", INGEST),
        ("report", "flows/report.py:report", REPORT),
    ]  # `cleanup` has no triggers: skipped
    assert [[a.name for a in d.automations] for d in loaded] == [
        ["ingest__automation_1", "ingest when both feeds landed"],
        ["report__automation_1", "report__automation_2"],
    ]


def test_each_automation_runs_its_deployment_and_is_owned_by_it() -> None:
    for deployment in load(EXAMPLE):
        assert deployment.owner_resource == f"prefect.deployment.{deployment.deployment_id}"
        for automation in deployment.automations:
            assert automation.owner_resource == deployment.owner_resource
            action = run_action(automation)
            assert action.source == "selected"
            assert action.deployment_id == deployment.deployment_id


def test_trigger_kinds_fields_and_action_fields_are_the_specs() -> None:
    (ingest, report) = load(EXAMPLE)
    pinged, both = ingest.automations
    sequence, requested = report.automations

    # An event trigger written without `type`.
    assert isinstance(pinged.trigger, EventTrigger)
    assert pinged.trigger.expect == {"s3.object.created"}
    assert pinged.trigger.match.root == {"prefect.resource.id": "s3.bucket.landing"}
    # Templates stay as written; they render when the automation fires.
    assert run_action(pinged).parameters == {
        "key": "{{ event.resource.id }}",
        "event": "{{ event }}",
    }
    assert run_action(pinged).job_variables is None
    assert run_action(pinged).schedule_after == timedelta(0)

    assert isinstance(both.trigger, CompoundTrigger)
    assert both.trigger.require == "all"
    assert both.trigger.within == timedelta(hours=1)
    assert [type(t) for t in both.trigger.triggers] == [EventTrigger, EventTrigger]
    assert run_action(both).job_variables == {"env": {"MODE": "catch-up"}}
    assert run_action(both).parameters is None

    assert isinstance(sequence.trigger, SequenceTrigger)
    assert sequence.description == "publish once the data is in and checked"
    assert run_action(sequence).schedule_after == timedelta(hours=2)  # "PT2H"
    assert sequence.enabled is True

    assert requested.enabled is False
    assert run_action(requested).schedule_after == timedelta(seconds=900)


def test_loaded_automations_are_the_ones_prefect_builds() -> None:
    # Prefect's own deployment-trigger schema (a test-only dependency) turns the
    # same specs into automations; Marmot reads those unchanged, so both must agree.
    from prefect.events import DeploymentTriggerTypes

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    document = yaml.safe_load(EXAMPLE.read_text())
    ids = {"ingest": INGEST, "report": REPORT}
    ours = {d.name: d.automations for d in load(EXAMPLE)}
    for deployment in document["deployments"]:
        if not deployment.get("triggers"):
            continue
        for position, spec in enumerate(deployment["triggers"], start=1):
            spec = {"name": f"{deployment['name']}__automation_{position}", **spec}
            trigger = adapter.validate_python(spec)
            trigger.set_deployment_id(ids[deployment["name"]])
            theirs = Automation.model_validate(trigger.as_automation().model_dump(mode="json"))
            mine = ours[deployment["name"]][position - 1]
            assert comparable(mine) == comparable(theirs)


def comparable(automation: Automation) -> Any:
    """The automation's document without its id; an empty ``match_related`` (``{}``
    from Prefect, ``[]`` from YAML without one) matches nothing either way."""

    def normal(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: [] if k == "match_related" and v == {} else normal(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [normal(v) for v in value]
        return value

    return normal(automation.model_dump(mode="json", exclude={"id"}))


def test_default_names_count_every_trigger_from_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        deployments:
          - name: etl
            entrypoint: etl.py:etl
            triggers:
              - name: named first
                expect: [a]
              - expect: [b]
              - name: ""
                expect: [c]
        """,
    )
    (etl,) = load_deployment_triggers(path, Ids({"etl": INGEST}))
    assert [a.name for a in etl.automations] == [
        "named first",
        "etl__automation_2",
        # An empty name falls back the way Prefect's as_automation does.
        f"Automation for deployment {INGEST}",
    ]


def test_missing_type_is_inferred_like_prefect(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        deployments:
          - name: etl
            triggers:
              - require: any
                triggers: [{expect: [a]}, {expect: [b]}]
              - triggers: [{expect: [a]}, {expect: [b]}]
              - expect: [c]
        """,
    )
    (etl,) = load_deployment_triggers(path, Ids({"etl": INGEST}))
    assert [a.trigger.type for a in etl.automations] == ["compound", "sequence", "event"]


def test_unrelated_keys_and_step_templates_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        build: "{{ not a valid template"
        deployments:
          - name: etl
            version: "{{ $VERSION }}"
            work_pool: {name: "{{ build-image.pool }}", job_variables: {image: "{{ x }}"}}
            parameters: {when: "{{ unknown.step }}"}
            schedules: [{cron: "0 * * * *"}]
            triggers: [{expect: [a]}]
        """,
    )
    (etl,) = load_deployment_triggers(path, Ids({"etl": INGEST}))
    assert run_action(etl.automations[0]).parameters is None


def test_empty_triggers_list_loads_a_deployment_with_no_automations(tmp_path: Path) -> None:
    # Applying it deletes what the deployment owned, as re-deploying without triggers does.
    path = write(tmp_path, "deployments: [{name: etl, triggers: []}]\n")
    (etl,) = load_deployment_triggers(path, Ids({"etl": INGEST}))
    assert etl.automations == ()


# -- selection and ids ---------------------------------------------------------------


def test_selection_loads_only_the_named_deployments() -> None:
    resolver = Ids({"report": REPORT})
    loaded = load_deployment_triggers(EXAMPLE, resolver, deployments=["report"])
    assert [d.name for d in loaded] == ["report"]
    assert resolver.asked == [[DeploymentRef("report", "flows/report.py:report")]]


def test_a_selected_name_not_in_the_file_is_an_error() -> None:
    with pytest.raises(DocumentError, match="no deployment named 'nightly'") as caught:
        load_deployment_triggers(EXAMPLE, NeverAsked(), deployments=["report", "nightly"])
    assert "'ingest', 'report', 'cleanup'" in str(caught.value)


def test_selecting_only_deployments_without_triggers_is_an_error() -> None:
    with pytest.raises(DocumentError) as caught:
        load_deployment_triggers(EXAMPLE, NeverAsked(), deployments=["cleanup"])
    assert str(caught.value) == (
        f"{EXAMPLE}: no deployment triggers: none of the selected deployments has `triggers:`"
    )


def test_the_resolver_is_asked_once_for_every_deployment() -> None:
    resolver = Ids({"ingest": INGEST, "report": REPORT})
    load_deployment_triggers(EXAMPLE, resolver)
    assert resolver.asked == [
        [
            DeploymentRef("ingest", "flows/ingest.py:ingest"),
            DeploymentRef("report", "flows/report.py:report"),
        ]
    ]


def test_explicit_ids_need_no_prefect_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    resolver = PrefectDeploymentResolver(ids={"ingest": INGEST, "report": REPORT})
    loaded = load_deployment_triggers(EXAMPLE, resolver)
    assert [d.deployment_id for d in loaded] == [INGEST, REPORT]
    assert all(run_action(a).deployment_id == REPORT for a in loaded[1].automations)


def test_a_deployment_without_an_id_or_an_api_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    resolver = PrefectDeploymentResolver(ids={"ingest": INGEST})
    with pytest.raises(ValidationFailed, match=r"deployment 'report'.*PREFECT_API_URL"):
        load_deployment_triggers(EXAMPLE, resolver)


# -- errors ------------------------------------------------------------------------------

BAD = """
deployments:
  - name: etl
    entrypoint: etl.py:etl
    triggers:
      - expect: [ok]
  - name: report
    entrypoint: report.py:report
    triggers:
      - type: compound
        require: all
        triggers:
          - expect: [a]
          - expect: [b]
            within: soon
"""


def test_a_bad_nested_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    with pytest.raises(DocumentError) as caught:
        load_deployment_triggers(path, NeverAsked())
    error = caught.value
    assert error.path == str(path)
    assert error.line == line_of(path, "within: soon")
    assert error.field == "deployments[1].triggers[0].triggers[1].within"
    assert str(error).startswith(f"{path}:{error.line}: deployments[1].triggers[0].triggers[1]")


@pytest.mark.parametrize(
    ("spec", "needle", "field", "message"),
    [
        ("threshold: -1", "threshold", "threshold", "greater than or equal to 0"),
        ("typo_field: 1", "typo_field", "typo_field", "Extra inputs are not permitted"),
        ("schedule_after: soon", "schedule_after", "schedule_after", "duration"),
        ("parameters: {x: '{{ event'}", "parameters", "parameters", "template"),
        ("enabled: '{{ $ON }}'", "enabled", "enabled", "{{ ... }} templates"),
        ("type: bogus", "type: bogus", "type", "trigger type must be one of"),
    ],
)
def test_a_bad_trigger_field_is_located(
    tmp_path: Path, spec: str, needle: str, field: str, message: str
) -> None:
    path = write(
        tmp_path,
        f"""
        deployments:
          - name: etl
            triggers:
              - expect: [fine]
              - expect: [a]
                {spec}
        """,
    )
    with pytest.raises(DocumentError) as caught:
        load_deployment_triggers(path, NeverAsked())
    assert caught.value.line == line_of(path, needle)
    assert caught.value.field == f"deployments[0].triggers[1].{field}"
    assert message in str(caught.value)


def test_a_metric_trigger_loads_with_or_without_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        deployments:
          - name: ingest
            triggers:
              - posture: Metric
                match_related: {prefect.resource.id: prefect.deployment.*}
                metric: {name: lateness, threshold: 60, operator: ">", range: PT10M}
                parameters: {why: late}
              - type: metric
                metric: {name: successes, threshold: 90, operator: "<", firing_for: 600}
        """,
    )
    (ingest,) = load(path)
    late, failing = ingest.automations

    assert isinstance(late.trigger, MetricTrigger)
    assert late.trigger.posture is Posture.Metric
    assert late.trigger.metric.name is PrefectMetric.lateness
    assert late.trigger.metric.operator is MetricTriggerOperator.GT
    assert late.trigger.metric.range == timedelta(minutes=10)
    assert late.trigger.related_specs[0].root == {"prefect.resource.id": "prefect.deployment.*"}
    assert run_action(late).parameters == {"why": "late"}
    assert run_action(late).deployment_id == INGEST
    assert isinstance(failing.trigger, MetricTrigger)
    assert failing.trigger.metric.firing_for == timedelta(seconds=600)
    assert failing.trigger.metric.range == timedelta(seconds=300)


def test_a_bad_metric_field_is_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        deployments:
          - name: etl
            triggers:
              - posture: Metric
                metric:
                  name: throughput
                  threshold: 60
                  operator: ">"
        """,
    )
    with pytest.raises(DocumentError, match="unknown metric 'throughput'") as caught:
        load_deployment_triggers(path, NeverAsked())
    assert caught.value.line == line_of(path, "name: throughput")
    assert caught.value.field == "deployments[0].triggers[0].metric.name"
    assert "'duration', 'lateness', 'successes'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "needle", "field", "message"),
    [
        ("deployments: [{name: etl, triggers: {expect: [a]}}]", "triggers", "triggers", "list"),
        ("deployments: [{name: etl, triggers: [oops]}]", "oops", "triggers[0]", "mapping"),
        ("deployments: [{triggers: [{expect: [a]}]}]", "triggers", "name", "needs a name"),
        ("deployments: [{name: e, entrypoint: 3, triggers: []}]", "3", "entrypoint", "flow.py"),
    ],
)
def test_a_bad_deployment_entry_is_located(
    tmp_path: Path, text: str, needle: str, field: str, message: str
) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(DocumentError, match=message) as caught:
        load_deployment_triggers(path, NeverAsked())
    assert caught.value.line == line_of(path, needle)
    assert caught.value.field == f"deployments[0].{field}"


def test_a_file_without_triggers_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "deployments:\n  - name: etl\n    entrypoint: etl.py:etl\n")
    with pytest.raises(DocumentError, match="no deployment triggers: no deployment has"):
        load_deployment_triggers(path, NeverAsked())


def test_a_file_that_is_not_a_prefect_yaml_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntrigger: {expect: [a]}\n")
    with pytest.raises(DocumentError, match="expected a prefect\\.yaml"):
        load_deployment_triggers(path, NeverAsked())


def test_two_triggers_may_not_end_up_with_one_name(tmp_path: Path) -> None:
    # Two flows' deployments may share a name; their unnamed triggers would too.
    path = write(
        tmp_path,
        """
        deployments:
          - name: default
            entrypoint: a.py:a
            triggers: [{expect: [a]}]
          - name: default
            entrypoint: b.py:b
            triggers: [{expect: [b]}]
        """,
    )
    resolver = ByRef(
        {DeploymentRef("default", "a.py:a"): INGEST, DeploymentRef("default", "b.py:b"): REPORT}
    )
    with pytest.raises(DocumentError, match="'default__automation_1' is also used by") as caught:
        load_deployment_triggers(path, resolver)
    assert caught.value.line == line_of(path, "expect: [b]")
    assert caught.value.field == "deployments[1].triggers[0].name"


# -- applying: the checks made before the daemon is asked anything -----------------------


def test_applying_one_deployment_twice_is_refused_before_any_change() -> None:
    (ingest, report) = load(EXAMPLE)
    twice = DeploymentTriggers("again", None, ingest.deployment_id, report.automations)
    # Nothing listens there: reaching the daemon would raise DaemonUnavailable instead.
    with (
        Client("tcp://127.0.0.1:1", timeout_s=0.2) as nowhere,
        pytest.raises(ValidationFailed, match="'ingest' and 'again' are the same deployment"),
    ):
        apply_deployment_triggers(nowhere, [ingest, twice])


def test_applying_two_triggers_with_one_name_is_refused_before_any_change() -> None:
    (ingest, report) = load(EXAMPLE)
    clash = DeploymentTriggers("report", None, report.deployment_id, ingest.automations[:1])
    with (
        Client("tcp://127.0.0.1:1", timeout_s=0.2) as nowhere,
        pytest.raises(ValidationFailed, match="'ingest__automation_1' is given to 2"),
    ):
        apply_deployment_triggers(nowhere, [ingest, clash])


# -- recognising the file --------------------------------------------------------------


def test_a_prefect_yaml_is_told_apart_from_automation_files(tmp_path: Path) -> None:
    assert is_prefect_yaml(EXAMPLE)
    examples = EXAMPLE.parent
    assert not is_prefect_yaml(examples / "automations.yaml")
    assert not is_prefect_yaml(write(tmp_path, "automations: []\ndeployments: []\n", "a.yaml"))
    assert not is_prefect_yaml(write(tmp_path, "- deployments: []\n", "b.yaml"))
    assert not is_prefect_yaml(write(tmp_path, "deployments: [\n", "c.yaml"))
    assert not is_prefect_yaml(tmp_path / "missing.yaml")
