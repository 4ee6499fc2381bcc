"""Rendering an action's templates with Prefect's context: the event and automation, plus
the orchestrator objects (``flow_run``, ``deployment``...) a template names and the event
concerns, read through an :class:`ObjectReader` once per render.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from uuid import UUID

from marmot.actors.action_runs import ActionFailed, ActionRun, TransientFailure
from marmot.actors.clock import SYSTEM_CLOCK
from marmot.config import MarmotConfig
from marmot.engine.clock import Clock
from marmot.engine.errors import NotFound
from marmot.engine.models.events import RESOURCE_ID, Event
from marmot.engine.templates import (
    OBJECT_NAMES,
    TemplateContext,
    TemplateFailed,
    build_context,
    hydrate_parameters,
    parameter_templates,
    render,
    template_names,
)

__all__ = ["ObjectReader", "Renderer"]

log = logging.getLogger(__name__)


class ObjectReader(Protocol):
    """Reads orchestrator objects as the API's JSON.

    Raises ``TransientFailure`` when the read may pass on retry, an
    ``ActionFailed`` that is also a ``NotFound`` when there is no such object,
    and ``ActionFailed`` for any other refusal.
    """

    async def read_flow_run(self, id: UUID, /) -> dict[str, Any]:
        """``GET /flow_runs/{id}``."""
        ...

    async def read_flow(self, id: UUID, /) -> dict[str, Any]:
        """``GET /flows/{id}``."""
        ...

    async def read_deployment(self, id: UUID, /) -> dict[str, Any]:
        """``GET /deployments/{id}``."""
        ...

    async def read_work_queue(self, id: UUID, /) -> dict[str, Any]:
        """``GET /work_queues/{id}``."""
        ...

    async def read_work_pool(self, id: UUID, /) -> dict[str, Any]:
        """The work pool with this id (``POST /work_pools/filter``)."""
        ...


# The resource kind each object is found under in an event (`prefect.flow-run.<id>`).
_KINDS = {
    "flow_run": "prefect.flow-run",
    "flow": "prefect.flow",
    "deployment": "prefect.deployment",
    "work_pool": "prefect.work-pool",
    "work_queue": "prefect.work-queue",
}

# Labels Prefect puts on a flow run's state-change events; with all four, the
# template sees the state from the event, not the (possibly newer) one read back.
_STATE_LABELS = {
    "type": "prefect.state-type",
    "name": "prefect.state-name",
    "message": "prefect.state-message",
    "timestamp": "prefect.state-timestamp",
}


def _first_resource(event: Event, kind: str) -> Mapping[str, str] | None:
    """The first resource (primary, then related) of that kind, as Prefect picks it."""
    for labels in (event.resource, *event.related):
        if labels[RESOURCE_ID].rpartition(".")[0] == kind:
            return labels
    return None


def _as_uuid(value: Any) -> UUID | None:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def _with_event_state(flow_run: dict[str, Any], resource: Mapping[str, str]) -> dict[str, Any]:
    if not all(label in resource for label in _STATE_LABELS.values()):
        return flow_run
    state = dict(flow_run.get("state") or {})
    state.update({field: resource[label] for field, label in _STATE_LABELS.items()})
    return {**flow_run, "state": state}


class _ObjectLoader:
    """The objects one render uses, each read at most once.

    An object comes from the event's resource of its kind, as in Prefect; when
    the event names none, Marmot fills ``flow``, ``deployment`` and
    ``work_queue`` in from the flow run's ids and ``work_pool`` from the work
    queue's (Prefect's own flow-run events always name them all).
    """

    def __init__(self, reader: ObjectReader, event: Event) -> None:
        self._reader = reader
        self._event = event
        self._loaded: dict[str, dict[str, Any] | None] = {}

    async def load(self, name: str) -> dict[str, Any] | None:
        if name in self._loaded:
            return self._loaded[name]
        resource = _first_resource(self._event, _KINDS[name])
        if resource is not None:
            object_id = _as_uuid(resource[RESOURCE_ID].rpartition(".")[2])
        else:
            object_id = await self._id_from_other_objects(name)
        data = await self._read(name, object_id) if object_id is not None else None
        if data is not None and name == "flow_run" and resource is not None:
            data = _with_event_state(data, resource)
        self._loaded[name] = data
        return data

    async def _id_from_other_objects(self, name: str) -> UUID | None:
        if name in ("flow", "deployment", "work_queue"):
            flow_run = await self.load("flow_run")
            return _as_uuid(flow_run.get(f"{name}_id")) if flow_run else None
        if name == "work_pool":
            work_queue = await self.load("work_queue")
            return _as_uuid(work_queue.get("work_pool_id")) if work_queue else None
        return None

    async def _read(self, name: str, object_id: UUID) -> dict[str, Any] | None:
        reader = self._reader
        readers = {
            "flow_run": reader.read_flow_run,
            "flow": reader.read_flow,
            "deployment": reader.read_deployment,
            "work_pool": reader.read_work_pool,
            "work_queue": reader.read_work_queue,
        }
        where = f"reading {name} {object_id} for a template"
        try:
            return await readers[name](object_id)
        except TransientFailure as exc:
            raise TransientFailure(f"{where} failed: {exc}", exc.retry_after_s) from exc
        except NotFound as exc:
            # As in Prefect, an object that is gone (deleted since the event)
            # is simply missing from the template, which renders it empty.
            log.warning(
                "%s: not found, left undefined",
                where,
                extra={"event_id": str(self._event.id), "reason": str(exc)},
            )
            return None
        except ActionFailed as exc:
            raise ActionFailed(f"{where} failed: {exc}") from exc


def _excerpt(source: str) -> str:
    return repr(source if len(source) <= 40 else f"{source[:40]}…")


# A render starts on the executor's event loop with this much of its time
# budget; one that needs more starts again in a worker thread with all of it,
# and goes to a thread from then on. Most templates take tens of microseconds,
# but a process woken after an idle spell runs slowly for a while (bench/idle.py:
# a 5 µs decode took 2.6 ms): a tighter cap sent quick templates to a thread.
INLINE_RENDER_S = 0.05
# A template rendered in a thread this quickly goes back to the loop: it ran
# out of time there because the process was held up, not for its own work.
QUICK_RENDER_S = 0.01
# Templates remembered as too slow for the loop, at most.
_SLOW_SOURCES = 256


class Renderer:
    """Renders an action's templates against its run, within ``limits.template_*``."""

    def __init__(
        self,
        config: MarmotConfig,
        reader: ObjectReader | None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._limits = config.limits
        self._ui_url = config.orchestrator.ui_url
        self._reader = reader
        self._now = clock.monotonic
        # Templates that outran INLINE_RENDER_S: rendered in a thread from then on.
        self._slow: dict[str, None] = {}

    async def render(self, source: str, run: ActionRun) -> str:
        """The template rendered for this run.

        Raises ``ActionFailed`` when it does not render (an error in it, a
        time-out, output over ``template_max_bytes``) and the reader's
        ``ActionFailed`` / ``TransientFailure`` when an object it uses cannot
        be read.
        """
        context = await self._context([source], run)
        timeout_s = self._limits.template_timeout_s
        try:
            if source not in self._slow:
                # On the loop, for a short while: a worker thread's round trip costs
                # ~0.1 ms of CPU (several times that after an idle spell), more
                # than most renders.
                inline_s = min(INLINE_RENDER_S, timeout_s)
                started = self._now()
                try:
                    return self._render(source, context, inline_s)
                except TemplateFailed:
                    if inline_s >= timeout_s or self._now() - started < inline_s:
                        raise  # it failed by itself, not for want of time
                self._remember_slow(source)
            # In a worker thread: a slow template must not stall the executor's
            # other actions for its whole time budget. (Rendering is pure: the one
            # cut short on the loop is rendered again from the start.)
            text, took_s = await asyncio.to_thread(self._timed_render, source, context, timeout_s)
        except TemplateFailed as exc:
            raise ActionFailed(f"template {_excerpt(source)} failed: {exc}") from exc
        if took_s < QUICK_RENDER_S:
            self._slow.pop(source, None)
        return text

    def _timed_render(
        self, source: str, context: TemplateContext, timeout_s: float
    ) -> tuple[str, float]:
        started = self._now()
        return self._render(source, context, timeout_s), self._now() - started

    def _remember_slow(self, source: str) -> None:
        if len(self._slow) >= _SLOW_SOURCES:
            self._slow.pop(next(iter(self._slow)))  # the longest known goes
        self._slow[source] = None

    async def render_parameters(self, value: Any, run: ActionRun) -> Any:
        """``run-deployment`` parameters (or job variables) hydrated as Prefect does.

        Walks dicts and lists: ``{"__prefect_kind": "jinja", "template": ...}``
        renders, ``json`` parses, ``none`` passes its ``value`` through, and a
        plain string with ``{{``/``{%`` is a template (a lone ``{{ expression }}``
        keeps its JSON type). All templates share one time budget. Raises
        ``ActionFailed`` naming the path of the value that failed.
        """
        if value is None:
            return None
        context = await self._context(parameter_templates(value), run)
        ends = self._now() + self._limits.template_timeout_s

        def render_one(source: str) -> str:
            return self._render(source, context, max(ends - self._now(), 0.0))

        try:
            return await asyncio.to_thread(hydrate_parameters, value, render_one)
        except TemplateFailed as exc:
            raise ActionFailed(f"templated value failed at {exc}") from exc

    def _render(self, source: str, context: TemplateContext, timeout_s: float) -> str:
        return render(
            source,
            context,
            max_bytes=self._limits.template_max_bytes,
            deadline_s=timeout_s,
            now=self._now,
        )

    async def _context(self, sources: Iterable[str], run: ActionRun) -> TemplateContext:
        names: set[str] = set()
        for source in sources:
            try:
                names |= template_names(source)
            except ValueError as exc:
                raise ActionFailed(f"template {_excerpt(source)} failed: {exc}") from exc
        objects: dict[str, dict[str, Any]] = {}
        wanted = [name for name in OBJECT_NAMES if name in names]
        if wanted and self._reader is not None and run.event is not None:
            loader = _ObjectLoader(self._reader, run.event)
            for name in wanted:
                data = await loader.load(name)
                if data is not None:
                    objects[name] = data
        return build_context(
            run.event,
            run.automation,
            objects,
            self._ui_url,
            labels=run.firing.labels,
            metric=run.firing.metric.as_payload() if run.firing.metric is not None else None,
        )
