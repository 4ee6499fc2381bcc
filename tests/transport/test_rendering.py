"""The action renderer: Prefect's template context, loading only the objects a template uses."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest

from marmot.actors.action_runs import ActionFailed, ActionRun, TransientFailure
from marmot.config import MarmotConfig
from marmot.engine.errors import NotFound
from marmot.engine.models.actions import DoNothing
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.triggers.firing import Firing
from marmot.transport.actions.rendering import ObjectReader, Renderer

T = TypeVar("T")

FLOW_RUN = UUID("0f2a9c1e-5b7d-4e3a-9c1e-2d4f6a8b0c1d")
FLOW = UUID("1b3c5d7e-9f0a-4b2c-8d4e-6f8a0b2c4d6e")
OTHER_FLOW = UUID("6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d")
DEPLOYMENT = UUID("2c4d6e8f-0a1b-4c3d-9e5f-7a9b1c3d5e7f")
WORK_QUEUE = UUID("3d5e7f9a-1b2c-4d4e-8f6a-8b0c2d4e6f8a")
WORK_POOL = UUID("4e6f8a0b-2c3d-4e5f-9a7b-9c1d3e5f7a9b")

OBJECTS: dict[UUID, dict[str, Any]] = {
    FLOW_RUN: {
        "id": str(FLOW_RUN),
        "name": "crimson-otter",
        "flow_id": str(OTHER_FLOW),
        "deployment_id": str(DEPLOYMENT),
        "work_queue_id": str(WORK_QUEUE),
        "parameters": {"day": "2026-03-01", "limit": 10},
        "state": {"id": "s1", "type": "RUNNING", "name": "Running", "message": None},
    },
    FLOW: {"id": str(FLOW), "name": "etl"},
    OTHER_FLOW: {"id": str(OTHER_FLOW), "name": "etl-from-the-flow-run"},
    DEPLOYMENT: {"id": str(DEPLOYMENT), "name": "etl-prod"},
    WORK_QUEUE: {"id": str(WORK_QUEUE), "name": "default", "work_pool_id": str(WORK_POOL)},
    WORK_POOL: {"id": str(WORK_POOL), "name": "k8s"},
}


class Reader:
    """Objects by id, as the orchestrator client returns them; counts every read."""

    def __init__(self, failures: dict[UUID, Exception] | None = None) -> None:
        self.reads: list[tuple[str, UUID]] = []
        self.failures = failures or {}

    async def _read(self, kind: str, id: UUID) -> dict[str, Any]:
        self.reads.append((kind, id))
        if id in self.failures:
            raise self.failures[id]
        return OBJECTS[id]

    async def read_flow_run(self, id: UUID, /) -> dict[str, Any]:
        return await self._read("flow_run", id)

    async def read_flow(self, id: UUID, /) -> dict[str, Any]:
        return await self._read("flow", id)

    async def read_deployment(self, id: UUID, /) -> dict[str, Any]:
        return await self._read("deployment", id)

    async def read_work_queue(self, id: UUID, /) -> dict[str, Any]:
        return await self._read("work_queue", id)

    async def read_work_pool(self, id: UUID, /) -> dict[str, Any]:
        return await self._read("work_pool", id)


class Missing(ActionFailed, NotFound):
    """What the orchestrator client raises for a 404."""


class FakeClock:
    """A monotonic clock that moves ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t

    def monotonic(self) -> float:
        return self()


def flow_run_event(*related: dict[str, str], **labels: str) -> Event:
    return Event.model_validate(
        {
            "occurred": datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
            "event": "prefect.flow-run.Failed",
            "resource": {"prefect.resource.id": f"prefect.flow-run.{FLOW_RUN}", **labels},
            "related": list(related),
        }
    )


def related(kind: str, id: UUID | str, role: str) -> dict[str, str]:
    return {"prefect.resource.id": f"prefect.{kind}.{id}", "prefect.resource.role": role}


FULL_EVENT = flow_run_event(
    related("flow", FLOW, "flow"),
    related("deployment", DEPLOYMENT, "deployment"),
    related("work-queue", WORK_QUEUE, "work-queue"),
    related("work-pool", WORK_POOL, "work-pool"),
)

AUTOMATION = Automation.model_validate(
    {"name": "etl watch", "trigger": {"type": "event", "expect": ["prefect.flow-run.Failed"]}}
)


def action_run(event: Event | None) -> ActionRun:
    firing = Firing(
        id=uuid4(),
        automation_id=AUTOMATION.id,
        trigger_path="trigger",
        labels={"prefect.resource.id": f"prefect.flow-run.{FLOW_RUN}"},
        triggering_event=event,
        fired_us=0,
    )
    return ActionRun(
        action=DoNothing(), automation=AUTOMATION, firing=firing, event=event, index=0, key="k"
    )


def renderer(
    reader: ObjectReader | None, clock: FakeClock | None = None, **settings: Any
) -> Renderer:
    sections = {
        "template_max_bytes": "limits",
        "template_timeout_s": "limits",
        "ui_url": "orchestrator",
    }
    document: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        document.setdefault(sections[key], {})[key] = value
    config = MarmotConfig.model_validate(document)
    return Renderer(config, reader, clock or FakeClock(0.0))  # type: ignore[arg-type]


def sync(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def test_a_template_on_the_event_alone_reads_nothing() -> None:
    reader = Reader()
    out = sync(
        renderer(reader).render("{{ event.event }} / {{ automation.name }}", action_run(FULL_EVENT))
    )
    assert out == "prefect.flow-run.Failed / etl watch"
    assert reader.reads == []


def test_an_object_is_read_once_per_render() -> None:
    reader = Reader()
    r = renderer(reader)
    source = "{{ flow_run.name }} {{ flow_run.state.name }} {{ flow_run.parameters.limit }}"
    assert sync(r.render(source, action_run(FULL_EVENT))) == "crimson-otter Running 10"
    assert reader.reads == [("flow_run", FLOW_RUN)]
    sync(r.render(source, action_run(FULL_EVENT)))
    assert reader.reads == [("flow_run", FLOW_RUN)] * 2


def test_only_the_objects_a_template_names_are_read() -> None:
    reader = Reader()
    out = sync(renderer(reader).render("{{ deployment.name }}", action_run(FULL_EVENT)))
    assert out == "etl-prod"
    assert reader.reads == [("deployment", DEPLOYMENT)]


def test_objects_come_from_the_events_resources_first() -> None:
    # The event names the flow; the flow run's own flow_id (OTHER_FLOW) is not used.
    reader = Reader()
    source = "{{ flow.name }}|{{ work_queue.name }}|{{ work_pool.name }}"
    assert sync(renderer(reader).render(source, action_run(FULL_EVENT))) == "etl|default|k8s"
    assert sorted(reader.reads) == sorted(
        [("flow", FLOW), ("work_queue", WORK_QUEUE), ("work_pool", WORK_POOL)]
    )


def test_objects_the_event_does_not_name_are_found_through_the_flow_run() -> None:
    reader = Reader()
    source = "{{ flow.name }}|{{ deployment.name }}|{{ work_queue.name }}|{{ work_pool.name }}"
    out = sync(renderer(reader).render(source, action_run(flow_run_event())))
    assert out == "etl-from-the-flow-run|etl-prod|default|k8s"
    assert sorted(reader.reads) == sorted(
        [
            ("flow_run", FLOW_RUN),
            ("flow", OTHER_FLOW),
            ("deployment", DEPLOYMENT),
            ("work_queue", WORK_QUEUE),
            ("work_pool", WORK_POOL),
        ]
    )


def test_objects_of_an_unrelated_event_are_undefined_and_not_read() -> None:
    reader = Reader()
    event = Event.model_validate(
        {
            "occurred": datetime(2026, 3, 1, tzinfo=UTC),
            "event": "acme.order.shipped",
            "resource": {"prefect.resource.id": "acme.order.42"},
        }
    )
    out = sync(renderer(reader).render("[{{ flow_run.name }}][{{ flow.name }}]", action_run(event)))
    assert out == "[][]"
    assert reader.reads == []


def test_a_resource_id_that_is_not_a_uuid_is_not_read() -> None:
    reader = Reader()
    event = flow_run_event(related("deployment", "etl", "deployment"))
    assert sync(renderer(reader).render("[{{ deployment.name }}]", action_run(event))) == "[]"
    assert reader.reads == []


def test_without_a_reader_objects_are_undefined() -> None:
    out = sync(
        renderer(None).render("[{{ flow_run.name }}]{{ event.event }}", action_run(FULL_EVENT))
    )
    assert out == "[]prefect.flow-run.Failed"


def test_without_an_event_nothing_is_read() -> None:
    reader = Reader()
    out = sync(
        renderer(reader).render("[{{ event.event }}][{{ flow_run.name }}]", action_run(None))
    )
    assert out == "[][]"
    assert reader.reads == []


def test_the_flow_runs_state_comes_from_the_events_state_labels() -> None:
    event = flow_run_event(
        **{
            "prefect.state-type": "FAILED",
            "prefect.state-name": "Failed",
            "prefect.state-message": "boom",
            "prefect.state-timestamp": "2026-03-01T09:30:00+00:00",
        }
    )
    source = (
        "{{ flow_run.state.type }} {{ flow_run.state.name }} {{ flow_run.state.message }} "
        "{{ flow_run.state.timestamp }}"
    )
    # Printed as Prefect prints its models: the state type as its enum, the time as a datetime.
    assert (
        sync(renderer(Reader()).render(source, action_run(event)))
        == "StateType.FAILED Failed boom 2026-03-01 09:30:00+00:00"
    )
    assert OBJECTS[FLOW_RUN]["state"]["name"] == "Running"  # the reader's data is not changed


def test_an_object_that_is_gone_is_undefined_as_in_prefect() -> None:
    reader = Reader({FLOW_RUN: Missing("flow run was not found")})
    out = sync(renderer(reader).render("[{{ flow_run.name }}]", action_run(FULL_EVENT)))
    assert out == "[]"
    assert reader.reads == [("flow_run", FLOW_RUN)]


def test_a_refused_read_fails_the_action_with_the_reason() -> None:
    reader = Reader({DEPLOYMENT: ActionFailed("orchestrator refused (403)")})
    with pytest.raises(ActionFailed, match=r"reading deployment .* orchestrator refused") as info:
        sync(renderer(reader).render("{{ deployment.name }}", action_run(FULL_EVENT)))
    assert not isinstance(info.value, TransientFailure)


def test_a_transient_read_failure_stays_transient() -> None:
    reader = Reader({FLOW_RUN: TransientFailure("503 from orchestrator", retry_after_s=7.0)})
    with pytest.raises(TransientFailure, match="503 from orchestrator") as info:
        sync(renderer(reader).render("{{ flow_run.name }}", action_run(FULL_EVENT)))
    assert info.value.retry_after_s == 7.0


def test_a_render_error_fails_the_action_naming_the_template() -> None:
    with pytest.raises(ActionFailed, match=r"template '\{\{ 1 / 0 \}\}' failed: line 1: Zero"):
        sync(renderer(Reader()).render("{{ 1 / 0 }}", action_run(FULL_EVENT)))


def test_an_invalid_template_fails_before_anything_is_read() -> None:
    reader = Reader()
    with pytest.raises(ActionFailed, match="failed: line 1"):
        sync(renderer(reader).render("{{ flow_run.name ", action_run(FULL_EVENT)))
    assert reader.reads == []


def test_the_output_limit_comes_from_the_settings() -> None:
    r = renderer(None, template_max_bytes=10)
    assert sync(r.render("{{ 'x' * 10 }}", action_run(FULL_EVENT))) == "x" * 10
    with pytest.raises(ActionFailed, match="larger than 10 bytes"):
        sync(r.render("{{ 'x' * 11 }}", action_run(FULL_EVENT)))


def test_the_time_budget_runs_on_the_injected_clock() -> None:
    r = renderer(None, FakeClock(0.5), template_timeout_s=10.0)
    source = "{% for a in range(100) %}{% for b in range(100) %}{% endfor %}{% endfor %}"
    with pytest.raises(ActionFailed, match="took longer than 10 s"):
        sync(r.render(source, action_run(FULL_EVENT)))


def test_links_point_at_the_configured_ui() -> None:
    r = renderer(Reader(), ui_url="https://prefect.example/")
    out = sync(r.render("{{ flow_run|ui_url }}", action_run(FULL_EVENT)))
    assert out == f"https://prefect.example/runs/flow-run/{FLOW_RUN}"


def test_the_firings_labels_are_available() -> None:
    out = sync(renderer(None).render("{{ labels.prefect.resource.id }}", action_run(FULL_EVENT)))
    assert out == f"prefect.flow-run.{FLOW_RUN}"


def test_parameters_render_keeping_types_and_read_each_object_once() -> None:
    reader = Reader()
    value = {
        "day": "{{ flow_run.parameters.day }}",
        "limit": "{{ flow_run.parameters.limit }}",
        "note": {"__prefect_kind": "jinja", "template": "{{ flow_run.name }} via {{ flow.name }}"},
        "ids": {"__prefect_kind": "json", "value": "[1, 2]"},
        "fixed": [True, None, 1.5],
    }
    out = sync(renderer(reader).render_parameters(value, action_run(FULL_EVENT)))
    assert out == {
        "day": "2026-03-01",
        "limit": 10,
        "note": "crimson-otter via etl",
        "ids": [1, 2],
        "fixed": [True, None, 1.5],
    }
    assert sorted(reader.reads) == [("flow", FLOW), ("flow_run", FLOW_RUN)]


def test_parameters_without_templates_read_nothing() -> None:
    reader = Reader()
    value = {"a": 1, "b": {"c": [1, "two"]}}
    assert sync(renderer(reader).render_parameters(value, action_run(FULL_EVENT))) == value
    assert sync(renderer(reader).render_parameters(None, action_run(FULL_EVENT))) is None
    assert reader.reads == []


def test_a_failing_parameter_fails_the_action_naming_its_path() -> None:
    value = {"a": {"b": [{"__prefect_kind": "jinja", "template": "{{ 1 / 0 }}"}]}}
    with pytest.raises(ActionFailed, match=r"a\.b\[0\]: line 1: ZeroDivisionError"):
        sync(renderer(None).render_parameters(value, action_run(FULL_EVENT)))


def test_all_parameter_templates_share_one_time_budget() -> None:
    # Each template alone fits in the budget; together they do not.
    value = {f"p{i}": {"__prefect_kind": "jinja", "template": "{{ 1 }}"} for i in range(30)}
    one = {"p0": value["p0"]}
    assert sync(
        renderer(None, FakeClock(0.1), template_timeout_s=1.0).render_parameters(
            one, action_run(FULL_EVENT)
        )
    ) == {"p0": "1"}
    with pytest.raises(ActionFailed, match="took longer than"):
        sync(
            renderer(None, FakeClock(0.1), template_timeout_s=1.0).render_parameters(
                value, action_run(FULL_EVENT)
            )
        )


@pytest.fixture
def threaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The templates rendered in a worker thread, in order."""
    sources: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(function: Any, source: str, *args: Any) -> Any:
        sources.append(source)
        return await to_thread(function, source, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return sources


def test_a_quick_template_renders_on_the_loop_and_a_slow_one_in_a_thread(
    threaded: list[str],
) -> None:
    clock = FakeClock(0.001)  # each read of the clock is a millisecond
    r = renderer(None, clock, template_timeout_s=10.0)

    # Quick: on the loop, no thread's round trip.
    assert sync(r.render("{{ event.event }}", action_run(FULL_EVENT))) == FULL_EVENT.event
    assert threaded == []

    # Past the 50 ms it may take on the loop: rendered again in a thread
    # with the whole budget (not failed), and in a thread from then on.
    slow = "{% for a in range(20) %}{% for b in range(20) %}{% endfor %}{% endfor %}done"
    began = clock.t
    assert sync(r.render(slow, action_run(FULL_EVENT))) == "done"
    first = clock.t - began
    assert threaded == [slow]
    began = clock.t
    assert sync(r.render(slow, action_run(FULL_EVENT))) == "done"
    assert threaded == [slow, slow]
    assert clock.t - began < first  # no second try on the loop

    # An error is an error at once, never tried again in a thread.
    with pytest.raises(ActionFailed, match="ZeroDivisionError"):
        sync(r.render("{{ 1 / 0 }}", action_run(FULL_EVENT)))
    assert threaded == [slow, slow]


def test_a_quick_template_held_up_once_goes_back_to_the_loop(threaded: list[str]) -> None:
    """Out of time on the loop because the process did not run (a busy machine):
    rendered in a thread that time, where it is quick, so on the loop again after."""

    class HeldUpOnce:
        """Still, but 60 ms pass at its third read (the render's first check)."""

        def __init__(self) -> None:
            self.reads, self.t = 0, 0.0

        def monotonic(self) -> float:
            self.reads += 1
            if self.reads == 3:
                self.t += 0.060
            return self.t

    r = renderer(None, HeldUpOnce(), template_timeout_s=10.0)  # type: ignore[arg-type]
    source = "{% for i in range(3) %}{{ i }}{% endfor %}"

    assert sync(r.render(source, action_run(FULL_EVENT))) == "012"
    assert threaded == [source]
    assert sync(r.render(source, action_run(FULL_EVENT))) == "012"
    assert threaded == [source]  # on the loop this time
