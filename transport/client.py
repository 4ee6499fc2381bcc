"""Python clients of the daemon's RPC API: ``Client`` (sync) and ``AsyncClient``.

They find the daemon through ``MARMOT_RPC_URL`` (default
``tcp://127.0.0.1:7601``), ``MARMOT_INGEST_URL`` (``tcp://127.0.0.1:7600``)
and ``MARMOT_TOKEN``, read when a client is created. Server errors arrive as
the typed ``MarmotError`` subclasses, with the server's code, message and
field paths; an unreachable daemon raises ``DaemonUnavailable``, and so does
a daemon that is still starting for every method but ``health`` and
``status`` (``wait_ready`` waits until it serves).
"""

# One module over the usual size: the two faces of one API (the methods are
# one-line calls of client.Requests; a test keeps both faces complete).

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.config import DEFAULT_RPC_URL
from marmot.engine.clock import Clock
from marmot.engine.errors import DaemonUnavailable
from marmot.engine.models.automations import Automation
from marmot.engine.models.backtest import BacktestJob
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.models.explain import Explanation
from marmot.engine.models.history import History, WhyReport
from marmot.engine.models.lint import LintReport
from marmot.engine.models.verdicts import TestReport
from marmot.transport.curve import client_curve
from marmot.transport.protocol import AutomationSummary, AutomationView
from marmot.transport.publisher import Publisher
from marmot.transport.requests import (
    AutomationLike,
    EventLike,
    EventPages,
    Request,
    Requests,
    is_serving,
)
from marmot.transport.rpc_clients import AsyncRpcClient, RpcClient

__all__ = ["AsyncClient", "Client", "Publisher", "Requests", "is_serving"]

# How often wait_ready asks a daemon that is not serving yet.
READY_POLL_S = 0.2

ProgressCallback = Callable[[dict[str, Any]], None]
T = TypeVar("T")


def _rpc_url(url: str | None) -> str:
    return url or os.environ.get("MARMOT_RPC_URL") or DEFAULT_RPC_URL


def _token(token: str | None) -> str | None:
    return token if token is not None else os.environ.get("MARMOT_TOKEN") or None


class _ReadyWait:
    """The deadline and last answer of a ``wait_ready``, shared by both clients."""

    def __init__(self, url: str, timeout_s: float, call_timeout_s: float, clock: Clock) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.call_timeout_s = call_timeout_s
        self._now = clock.monotonic
        self.deadline = self._now() + timeout_s
        self.last: dict[str, Any] | None = None

    def next_call_timeout_s(self) -> float:
        """How long the next ``health`` call may wait: never past the deadline."""
        return max(min(self.call_timeout_s, self.deadline - self._now()), 0.001)

    def no_reply(self) -> None:
        """A ``health`` call got no answer: the daemon stopped answering, unless the
        call was the one cut short by the deadline (then the last reply stands)."""
        if self._now() < self.deadline:
            self.last = None

    def pause_s(self) -> float | None:
        """Seconds to wait before asking again, or None when the deadline has passed."""
        remaining = self.deadline - self._now()
        return None if remaining <= 0 else min(READY_POLL_S, remaining)

    def timed_out(self) -> DaemonUnavailable:
        """The error at the deadline; its ``details`` are the last reply (None: no reply)."""
        last = self.last
        if last is None:
            return DaemonUnavailable(f"no reply from {self.url} within {self.timeout_s:g} s")
        recovered = f"{last.get('automations_recovered')} of {last.get('automations_total')}"
        return DaemonUnavailable(
            f"the daemon at {self.url} is still starting after {self.timeout_s:g} s "
            f"(phase {last.get('phase')}, automations recovered: {recovered})",
            details=last,
        )


class Client:
    """A synchronous client of the daemon's RPC API (every method of ``Requests``).

    ``server_key`` (the daemon's public key: Z85 text or its ``.key`` file) and
    ``client_key`` (this client's ``.key_secret`` file) talk CURVE to a daemon
    that has ``curve.secret_key_file`` set.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        server_key: str | None = None,
        client_key: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.url = _rpc_url(url)
        self._clock = clock
        self._rpc = RpcClient(
            self.url,
            token=_token(token),
            timeout_s=timeout_s,
            curve=client_curve(server_key, client_key),
            clock=clock,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self._rpc.close()

    def send(self, request: Request[T], *, timeout_s: float | None = None) -> T:
        """Send a request and wait for its result (the server's errors are raised)."""
        result = self._rpc.call(request.method.name, request.params, timeout_s=timeout_s)
        return request.read(result)

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call any RPC method by name; its raw JSON result."""
        return self._rpc.call(method, dict(params or {}))

    def wait_ready(
        self, timeout_s: float = 300.0, *, on_progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Wait until the daemon serves (e.g. after ``marmot serve &``); returns its health.

        Asks ``health`` every ``READY_POLL_S`` while the daemon does not answer
        yet or is starting; ``on_progress`` gets each reply of a starting
        daemon. Raises ``DaemonUnavailable`` if it does not serve within
        ``timeout_s``, with the last reply as ``details`` (None if none came).
        """
        wait = _ReadyWait(self.url, timeout_s, self._rpc.timeout_s, self._clock)
        while True:
            try:
                health = self.send(Requests.health(), timeout_s=wait.next_call_timeout_s())
            except DaemonUnavailable:
                wait.no_reply()
            else:
                if is_serving(health):
                    return health
                wait.last = health
                if on_progress is not None:
                    on_progress(health)
            pause = wait.pause_s()
            if pause is None:
                raise wait.timed_out()
            time.sleep(pause)

    def health(self) -> dict[str, Any]:
        """The daemon's state: ``{"ok": true, "state": "serving", "version"}`` once it
        serves; while it starts ``"ok": false, "state": "starting"`` with ``phase``,
        ``automations_recovered``, ``automations_total`` and ``elapsed_s``."""
        return self.send(Requests.health())

    def status(self) -> dict[str, Any]:
        """Counts, queue depths and remaining capacity, with ``state: serving``; while
        the daemon starts, its ``state`` (``starting``) and progress (see ``health``)."""
        return self.send(Requests.status())

    def create_automation(self, automation: AutomationLike) -> Automation:
        """Create an automation; returns it with its id."""
        return self.send(Requests.create_automation(automation))

    def create_automations(self, automations: Sequence[AutomationLike]) -> list[Automation]:
        """Create up to 1,000 automations at once, all or none (a name taken, or one
        that does not validate, creates none); returns them with their ids."""
        return self.send(Requests.create_automations(automations))

    def read_automation(self, automation_id: UUID | str) -> Automation:
        """The automation with this id (``NotFound`` otherwise)."""
        return self.send(Requests.read_automation(automation_id))

    def read_automation_by_name(self, name: str) -> Automation:
        """The automation with this name (``NotFound`` otherwise)."""
        return self.send(Requests.read_automation_by_name(name))

    def list_automations(
        self,
        *,
        name_prefix: str | None = None,
        enabled: bool | None = None,
        tags: Sequence[str] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[AutomationView]:
        """Automations with their ``created``/``updated``/``version``, sorted by name."""
        return self.send(Requests.list_automations(name_prefix, enabled, tags, limit, offset))

    def list_automation_summaries(
        self,
        *,
        name_prefix: str | None = None,
        enabled: bool | None = None,
        tags: Sequence[str] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[AutomationSummary]:
        """``list_automations`` as one line each (id, name, enabled, trigger and action
        types, tags, updated, version): what a listing of thousands needs, sent
        and read in a fraction of the time."""
        return self.send(
            Requests.list_automation_summaries(name_prefix, enabled, tags, limit, offset)
        )

    def update_automation(
        self, automation_id: UUID | str, automation: AutomationLike
    ) -> Automation:
        """Replace an automation (its trigger state resets)."""
        return self.send(Requests.update_automation(automation_id, automation))

    def delete_automation(self, automation_id: UUID | str) -> None:
        """Delete an automation."""
        return self.send(Requests.delete_automation(automation_id))

    def pause_automation(self, automation_id: UUID | str) -> Automation:
        """Stop evaluating an automation (its state is forgotten)."""
        return self.send(Requests.pause_automation(automation_id))

    def resume_automation(self, automation_id: UUID | str) -> Automation:
        """Start evaluating a paused automation again."""
        return self.send(Requests.resume_automation(automation_id))

    def explain(self, automation_id: UUID | str, limit: int = 1000, offset: int = 0) -> Explanation:
        """An automation's live state: buckets per trigger and key (a page of ``limit``
        from ``offset``; ``buckets_total`` says how many), its next deadline."""
        return self.send(Requests.explain(automation_id, limit, offset))

    def test_automation(
        self,
        automation: UUID | str | AutomationLike,
        *,
        events: Iterable[EventLike] = (),
        event_ids: Sequence[UUID | str] = (),
        last: int | None = None,
        event_name: str | None = None,
    ) -> TestReport:
        """A dry run: each event's verdict per condition, evaluated on a copy of the
        automation's live state (a stored id) or a fresh one (a document not stored).
        Give ``events``, logged ``event_ids`` or the ``last`` logged events (named
        ``event_name``). Changes nothing and runs no action."""
        return self.send(
            Requests.test_automation(
                automation, events=events, event_ids=event_ids, last=last, event_name=event_name
            )
        )

    def automation_history(
        self,
        automation_id: UUID | str,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> History:
        """The automation's firings and resolutions, newest first, with each action's
        outcome and the incidents; ``History.next`` is the cursor of the next page."""
        return self.send(Requests.automation_history(automation_id, since, limit, cursor))

    def why(self, automation_id: UUID | str, event_id: UUID | str) -> WhyReport:
        """What the automation did with a logged event at the time, and what the
        bucket it went to did afterwards."""
        return self.send(Requests.why(automation_id, event_id))

    def lint_automations(self, automations: Sequence[AutomationLike]) -> list[LintReport]:
        """Likely mistakes in automation documents, checked against the daemon's event
        log and settings too (raises ``ValidationFailed`` for one that does not load)."""
        return self.send(Requests.lint_automations(automations))

    def start_backtest(
        self,
        automations: Sequence[AutomationLike],
        since: datetime | None = None,
        until: datetime | None = None,
        compare: UUID | str | None = None,
    ) -> BacktestJob:
        """Start running ``automations`` over the daemon's event log (in a Ray task);
        read its progress and report with ``read_backtest``."""
        return self.send(Requests.start_backtest(automations, since, until, compare))

    def read_backtest(self, job_id: UUID | str) -> BacktestJob:
        """A backtest's progress, and its report once done."""
        return self.send(Requests.read_backtest(job_id))

    def emit(self, events: Iterable[EventLike]) -> list[int]:
        """Send events; returns their log sequence numbers once they are durable."""
        return self.send(Requests.emit(events))

    def filter_events(
        self,
        *,
        names: Sequence[str] = (),
        resource_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        by_arrival: bool = False,
    ) -> list[dict[str, Any]]:
        """Events from the log (with their ``seq``), newest first by ``occurred`` (by
        arrival with ``by_arrival``), or those after ``after_seq``, oldest first; every
        filter applies either way. Read in pages the daemon bounds by bytes."""
        pages = EventPages(
            Requests.filter_events(names, resource_id, since, until, limit, after_seq, by_arrival)
        )
        while pages.request is not None:
            pages.add(self.send(pages.request))
        return pages.events

    def create_block(self, block: BlockDocument | Mapping[str, Any]) -> BlockDocument:
        """Store a notification block; returns it as stored, secrets masked."""
        return self.send(Requests.create_block(block))

    def read_block(self, block_id: UUID | str) -> BlockDocument:
        """The block with this id, secrets masked (``NotFound`` otherwise)."""
        return self.send(Requests.read_block(block_id))

    def read_block_by_name(self, block_type_slug: str, name: str) -> BlockDocument:
        """The block of this type and name, secrets masked (``NotFound`` otherwise)."""
        return self.send(Requests.read_block_by_name(block_type_slug, name))

    def list_blocks(self, block_type_slug: str | None = None) -> list[dict[str, Any]]:
        """Blocks (of one type, if given) as public views, sorted by type and name."""
        return self.send(Requests.list_blocks(block_type_slug))

    def delete_block(self, block_id: UUID | str) -> None:
        """Delete a block."""
        return self.send(Requests.delete_block(block_id))

    def create_webhook(
        self,
        name: str,
        template: str | Mapping[str, Any],
        *,
        description: str = "",
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Create a webhook; returns it with its id, slug and ``url`` (Marmot picks the
        slug). ``template`` is a Jinja template rendering to a JSON event, or a mapping
        (the event's JSON, with Jinja in its strings)."""
        return self.send(Requests.create_webhook(name, template, description, enabled))

    def read_webhook(self, webhook_id: UUID | str) -> dict[str, Any]:
        """The webhook with this id (``NotFound`` otherwise)."""
        return self.send(Requests.read_webhook(webhook_id))

    def read_webhook_by_name(self, name: str) -> dict[str, Any]:
        """The webhook with this name (``NotFound`` otherwise)."""
        return self.send(Requests.read_webhook_by_name(name))

    def list_webhooks(
        self, *, name_prefix: str | None = None, enabled: bool | None = None
    ) -> list[dict[str, Any]]:
        """Webhooks, sorted by name."""
        return self.send(Requests.list_webhooks(name_prefix, enabled))

    def update_webhook(
        self,
        webhook_id: UUID | str,
        *,
        name: str | None = None,
        template: str | Mapping[str, Any] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """Change the given fields of a webhook (``enabled=False`` disables it: its URL
        answers 404 until it is enabled again); its URL stays."""
        return self.send(Requests.update_webhook(webhook_id, name, template, description, enabled))

    def rotate_webhook(self, webhook_id: UUID | str) -> dict[str, Any]:
        """Give a webhook a new URL; the old one stops working at once."""
        return self.send(Requests.rotate_webhook(webhook_id))

    def delete_webhook(self, webhook_id: UUID | str) -> None:
        """Delete a webhook."""
        return self.send(Requests.delete_webhook(webhook_id))

    def list_incidents(
        self,
        *,
        automation_id: UUID | str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Declared incidents, newest first."""
        return self.send(Requests.list_incidents(automation_id, status, limit))

    def read_incident(self, incident_id: UUID | str) -> dict[str, Any]:
        """One incident."""
        return self.send(Requests.read_incident(incident_id))

    def resolve_incident(self, incident_id: UUID | str) -> dict[str, Any]:
        """Mark an incident resolved."""
        return self.send(Requests.resolve_incident(incident_id))

    def checkpoint(self) -> dict[str, Any]:
        """Checkpoint every automation, trim the event log, fold the WAL into the database."""
        return self.send(Requests.checkpoint())

    def backup(self, path: str) -> dict[str, Any]:
        """Copy the daemon's database to a new file at ``path`` (on the daemon's machine)."""
        return self.send(Requests.backup(path))


class AsyncClient:
    """An asyncio client of the daemon's RPC API (the same methods as ``Client``, awaitable)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        server_key: str | None = None,
        client_key: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.url = _rpc_url(url)
        self._clock = clock
        self._rpc = AsyncRpcClient(
            self.url,
            token=_token(token),
            timeout_s=timeout_s,
            curve=client_curve(server_key, client_key),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self._rpc.close()

    async def send(self, request: Request[T], *, timeout_s: float | None = None) -> T:
        """Send a request and wait for its result (the server's errors are raised)."""
        result = await self._rpc.call(request.method.name, request.params, timeout_s=timeout_s)
        return request.read(result)

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call any RPC method by name; its raw JSON result."""
        return await self._rpc.call(method, dict(params or {}))

    async def wait_ready(
        self, timeout_s: float = 300.0, *, on_progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Wait until the daemon serves; returns its health (see ``Client.wait_ready``)."""
        wait = _ReadyWait(self.url, timeout_s, self._rpc.timeout_s, self._clock)
        while True:
            try:
                health = await self.send(Requests.health(), timeout_s=wait.next_call_timeout_s())
            except DaemonUnavailable:
                wait.no_reply()
            else:
                if is_serving(health):
                    return health
                wait.last = health
                if on_progress is not None:
                    on_progress(health)
            pause = wait.pause_s()
            if pause is None:
                raise wait.timed_out()
            await asyncio.sleep(pause)

    async def health(self) -> dict[str, Any]:
        """The daemon's state: ``{"ok": true, "state": "serving", "version"}`` once it
        serves; while it starts ``"ok": false, "state": "starting"`` with ``phase``,
        ``automations_recovered``, ``automations_total`` and ``elapsed_s``."""
        return await self.send(Requests.health())

    async def status(self) -> dict[str, Any]:
        """Counts, queue depths and remaining capacity, with ``state: serving``; while
        the daemon starts, its ``state`` (``starting``) and progress (see ``health``)."""
        return await self.send(Requests.status())

    async def create_automation(self, automation: AutomationLike) -> Automation:
        """Create an automation; returns it with its id."""
        return await self.send(Requests.create_automation(automation))

    async def create_automations(self, automations: Sequence[AutomationLike]) -> list[Automation]:
        """Create up to 1,000 automations at once, all or none (a name taken, or one
        that does not validate, creates none); returns them with their ids."""
        return await self.send(Requests.create_automations(automations))

    async def read_automation(self, automation_id: UUID | str) -> Automation:
        """The automation with this id (``NotFound`` otherwise)."""
        return await self.send(Requests.read_automation(automation_id))

    async def read_automation_by_name(self, name: str) -> Automation:
        """The automation with this name (``NotFound`` otherwise)."""
        return await self.send(Requests.read_automation_by_name(name))

    async def list_automations(
        self,
        *,
        name_prefix: str | None = None,
        enabled: bool | None = None,
        tags: Sequence[str] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[AutomationView]:
        """Automations with their ``created``/``updated``/``version``, sorted by name."""
        return await self.send(Requests.list_automations(name_prefix, enabled, tags, limit, offset))

    async def list_automation_summaries(
        self,
        *,
        name_prefix: str | None = None,
        enabled: bool | None = None,
        tags: Sequence[str] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[AutomationSummary]:
        """``list_automations`` as one line each (see ``Client.list_automation_summaries``)."""
        return await self.send(
            Requests.list_automation_summaries(name_prefix, enabled, tags, limit, offset)
        )

    async def update_automation(
        self, automation_id: UUID | str, automation: AutomationLike
    ) -> Automation:
        """Replace an automation (its trigger state resets)."""
        return await self.send(Requests.update_automation(automation_id, automation))

    async def delete_automation(self, automation_id: UUID | str) -> None:
        """Delete an automation."""
        return await self.send(Requests.delete_automation(automation_id))

    async def pause_automation(self, automation_id: UUID | str) -> Automation:
        """Stop evaluating an automation (its state is forgotten)."""
        return await self.send(Requests.pause_automation(automation_id))

    async def resume_automation(self, automation_id: UUID | str) -> Automation:
        """Start evaluating a paused automation again."""
        return await self.send(Requests.resume_automation(automation_id))

    async def explain(
        self, automation_id: UUID | str, limit: int = 1000, offset: int = 0
    ) -> Explanation:
        """An automation's live state: buckets per trigger and key (a page of ``limit``
        from ``offset``; ``buckets_total`` says how many), its next deadline."""
        return await self.send(Requests.explain(automation_id, limit, offset))

    async def test_automation(
        self,
        automation: UUID | str | AutomationLike,
        *,
        events: Iterable[EventLike] = (),
        event_ids: Sequence[UUID | str] = (),
        last: int | None = None,
        event_name: str | None = None,
    ) -> TestReport:
        """A dry run: each event's verdict per condition, evaluated on a copy of the
        automation's live state (a stored id) or a fresh one (a document not stored).
        Give ``events``, logged ``event_ids`` or the ``last`` logged events (named
        ``event_name``). Changes nothing and runs no action."""
        return await self.send(
            Requests.test_automation(
                automation, events=events, event_ids=event_ids, last=last, event_name=event_name
            )
        )

    async def automation_history(
        self,
        automation_id: UUID | str,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> History:
        """The automation's firings and resolutions, newest first, with each action's
        outcome and the incidents; ``History.next`` is the cursor of the next page."""
        return await self.send(Requests.automation_history(automation_id, since, limit, cursor))

    async def why(self, automation_id: UUID | str, event_id: UUID | str) -> WhyReport:
        """What the automation did with a logged event at the time, and what the
        bucket it went to did afterwards."""
        return await self.send(Requests.why(automation_id, event_id))

    async def lint_automations(self, automations: Sequence[AutomationLike]) -> list[LintReport]:
        """Likely mistakes in automation documents, checked against the daemon's event
        log and settings too (raises ``ValidationFailed`` for one that does not load)."""
        return await self.send(Requests.lint_automations(automations))

    async def start_backtest(
        self,
        automations: Sequence[AutomationLike],
        since: datetime | None = None,
        until: datetime | None = None,
        compare: UUID | str | None = None,
    ) -> BacktestJob:
        """Start running ``automations`` over the daemon's event log (in a Ray task);
        read its progress and report with ``read_backtest``."""
        return await self.send(Requests.start_backtest(automations, since, until, compare))

    async def read_backtest(self, job_id: UUID | str) -> BacktestJob:
        """A backtest's progress, and its report once done."""
        return await self.send(Requests.read_backtest(job_id))

    async def emit(self, events: Iterable[EventLike]) -> list[int]:
        """Send events; returns their log sequence numbers once they are durable."""
        return await self.send(Requests.emit(events))

    async def filter_events(
        self,
        *,
        names: Sequence[str] = (),
        resource_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        by_arrival: bool = False,
    ) -> list[dict[str, Any]]:
        """Events from the log (with their ``seq``), newest first by ``occurred`` (by
        arrival with ``by_arrival``), or those after ``after_seq``, oldest first; every
        filter applies either way. Read in pages the daemon bounds by bytes."""
        pages = EventPages(
            Requests.filter_events(names, resource_id, since, until, limit, after_seq, by_arrival)
        )
        while pages.request is not None:
            pages.add(await self.send(pages.request))
        return pages.events

    async def create_block(self, block: BlockDocument | Mapping[str, Any]) -> BlockDocument:
        """Store a notification block; returns it as stored, secrets masked."""
        return await self.send(Requests.create_block(block))

    async def read_block(self, block_id: UUID | str) -> BlockDocument:
        """The block with this id, secrets masked (``NotFound`` otherwise)."""
        return await self.send(Requests.read_block(block_id))

    async def read_block_by_name(self, block_type_slug: str, name: str) -> BlockDocument:
        """The block of this type and name, secrets masked (``NotFound`` otherwise)."""
        return await self.send(Requests.read_block_by_name(block_type_slug, name))

    async def list_blocks(self, block_type_slug: str | None = None) -> list[dict[str, Any]]:
        """Blocks (of one type, if given) as public views, sorted by type and name."""
        return await self.send(Requests.list_blocks(block_type_slug))

    async def delete_block(self, block_id: UUID | str) -> None:
        """Delete a block."""
        return await self.send(Requests.delete_block(block_id))

    async def create_webhook(
        self,
        name: str,
        template: str | Mapping[str, Any],
        *,
        description: str = "",
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Create a webhook; returns it with its id, slug and ``url`` (Marmot picks the
        slug). ``template`` is a Jinja template rendering to a JSON event, or a mapping
        (the event's JSON, with Jinja in its strings)."""
        return await self.send(Requests.create_webhook(name, template, description, enabled))

    async def read_webhook(self, webhook_id: UUID | str) -> dict[str, Any]:
        """The webhook with this id (``NotFound`` otherwise)."""
        return await self.send(Requests.read_webhook(webhook_id))

    async def read_webhook_by_name(self, name: str) -> dict[str, Any]:
        """The webhook with this name (``NotFound`` otherwise)."""
        return await self.send(Requests.read_webhook_by_name(name))

    async def list_webhooks(
        self, *, name_prefix: str | None = None, enabled: bool | None = None
    ) -> list[dict[str, Any]]:
        """Webhooks, sorted by name."""
        return await self.send(Requests.list_webhooks(name_prefix, enabled))

    async def update_webhook(
        self,
        webhook_id: UUID | str,
        *,
        name: str | None = None,
        template: str | Mapping[str, Any] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """Change the given fields of a webhook (``enabled=False`` disables it: its URL
        answers 404 until it is enabled again); its URL stays."""
        return await self.send(
            Requests.update_webhook(webhook_id, name, template, description, enabled)
        )

    async def rotate_webhook(self, webhook_id: UUID | str) -> dict[str, Any]:
        """Give a webhook a new URL; the old one stops working at once."""
        return await self.send(Requests.rotate_webhook(webhook_id))

    async def delete_webhook(self, webhook_id: UUID | str) -> None:
        """Delete a webhook."""
        return await self.send(Requests.delete_webhook(webhook_id))

    async def list_incidents(
        self,
        *,
        automation_id: UUID | str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Declared incidents, newest first."""
        return await self.send(Requests.list_incidents(automation_id, status, limit))

    async def read_incident(self, incident_id: UUID | str) -> dict[str, Any]:
        """One incident."""
        return await self.send(Requests.read_incident(incident_id))

    async def resolve_incident(self, incident_id: UUID | str) -> dict[str, Any]:
        """Mark an incident resolved."""
        return await self.send(Requests.resolve_incident(incident_id))

    async def checkpoint(self) -> dict[str, Any]:
        """Checkpoint every automation, trim the event log, fold the WAL into the database."""
        return await self.send(Requests.checkpoint())

    async def backup(self, path: str) -> dict[str, Any]:
        """Copy the daemon's database to a new file at ``path`` (on the daemon's machine)."""
        return await self.send(Requests.backup(path))
