"""Python clients of the daemon: ``Client`` (sync), ``AsyncClient`` and ``Publisher``.

They find the daemon through ``MARMOT_RPC_URL`` (default
``tcp://127.0.0.1:7601``), ``MARMOT_INGEST_URL`` (``tcp://127.0.0.1:7600``)
and ``MARMOT_TOKEN``, read when a client is created. Server errors arrive as
the typed ``MarmotError`` subclasses, with the server's code, message and
field paths; an unreachable daemon raises ``DaemonUnavailable``, and so does
a daemon that is still starting for every method but ``health`` and
``status`` (``wait_ready`` waits until it serves).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar
from uuid import UUID

import zmq

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.config import DEFAULT_INGEST_URL, DEFAULT_RPC_URL
from marmot.engine.clock import Clock
from marmot.engine.errors import DaemonUnavailable
from marmot.engine.models.automations import Automation
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.models.events import Event
from marmot.engine.models.explain import Explanation
from marmot.transport.codec import events_frame
from marmot.transport.curve import ClientCurve
from marmot.transport.protocol import METHODS, AutomationView, Method
from marmot.transport.rpc import AsyncRpcClient, RpcClient

# How often wait_ready asks a daemon that is not serving yet.
READY_POLL_S = 0.2

ProgressCallback = Callable[[dict[str, Any]], None]
T = TypeVar("T")

AutomationLike = Automation | Mapping[str, Any]
EventLike = Event | Mapping[str, Any]


def _rpc_url(url: str | None) -> str:
    return url or os.environ.get("MARMOT_RPC_URL") or DEFAULT_RPC_URL


def _token(token: str | None) -> str | None:
    return token if token is not None else os.environ.get("MARMOT_TOKEN") or None


def _curve(server_key: str | None, client_key: str | None) -> ClientCurve | None:
    """CURVE settings from the arguments, else ``MARMOT_SERVER_KEY`` /
    ``MARMOT_CLIENT_KEY``; None (plain TCP) when no server key is given."""
    return ClientCurve.from_options(
        server_key if server_key is not None else os.environ.get("MARMOT_SERVER_KEY"),
        client_key if client_key is not None else os.environ.get("MARMOT_CLIENT_KEY"),
    )


def _automation_doc(automation: AutomationLike) -> dict[str, Any]:
    if isinstance(automation, Automation):
        return automation.model_dump(mode="json")
    return dict(automation)


def _event_doc(event: EventLike) -> dict[str, Any]:
    if isinstance(event, Event):
        return event.model_dump(mode="json", exclude={"received"})
    return dict(event)


def _template_param(template: str | Mapping[str, Any]) -> str | dict[str, Any]:
    # A mapping is the event's JSON, with Jinja in its strings; the daemon writes it out.
    return template if isinstance(template, str) else dict(template)


def _block_doc(block: BlockDocument | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(block, BlockDocument):
        return block.create_document()
    return dict(block)


def is_serving(health: Mapping[str, Any]) -> bool:
    """Whether a ``health`` reply says the daemon serves every method."""
    return health.get("ok") is True and health.get("state") == "serving"


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    """One call, ready to send: the method, its params (validated against the method's
    params model before sending) and how to read the reply's result."""

    method: Method[Any, Any]
    params: dict[str, Any]
    read: Callable[[Any], T]


def _request(method_name: str, read: Callable[[Any], T], /, **params: Any) -> Request[T]:
    method = METHODS[method_name]
    given = {k: v for k, v in params.items() if v is not None}
    # Checked here too: a bad argument fails before it travels.
    method.params.model_validate(given)
    return Request(method, given, read)


def _typed(name: str) -> Callable[[Any], Any]:
    return METHODS[name].load


def _automation(result: Any) -> Automation:
    view: AutomationView = METHODS["automations.read"].load(result)
    return view.automation()


def _block(result: Any) -> BlockDocument:
    # The server masks secrets: they arrive (and stay) as "********".
    return BlockDocument.model_validate(result)


def _document(result: Any) -> dict[str, Any]:
    return dict(result)


def _documents(result: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in result]


def _nothing(result: Any) -> None:
    return None


class Requests:
    """Every call of the RPC API as a ``Request``: what both clients send.

    ``Client`` and ``AsyncClient`` expose one method per request here and
    differ only in how they wait for the reply.
    """

    @staticmethod
    def health() -> Request[dict[str, Any]]:
        return _request("health", _document)

    @staticmethod
    def status() -> Request[dict[str, Any]]:
        return _request("status", _document)

    @staticmethod
    def create_automation(automation: AutomationLike) -> Request[Automation]:
        return _request("automations.create", _automation, automation=_automation_doc(automation))

    @staticmethod
    def read_automation(automation_id: UUID | str) -> Request[Automation]:
        return _request("automations.read", _automation, id=str(automation_id))

    @staticmethod
    def read_automation_by_name(name: str) -> Request[Automation]:
        return _request("automations.read_by_name", _automation, name=name)

    @staticmethod
    def list_automations(
        name_prefix: str | None = None,
        enabled: bool | None = None,
        tags: Sequence[str] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> Request[list[AutomationView]]:
        return _request(
            "automations.filter",
            _typed("automations.filter"),
            name_prefix=name_prefix,
            enabled=enabled,
            tags=list(tags) or None,
            limit=limit,
            offset=offset,
        )

    @staticmethod
    def update_automation(
        automation_id: UUID | str, automation: AutomationLike
    ) -> Request[Automation]:
        document = _automation_doc(automation)
        document.pop("id", None)
        return _request(
            "automations.update", _automation, id=str(automation_id), automation=document
        )

    @staticmethod
    def delete_automation(automation_id: UUID | str) -> Request[None]:
        return _request("automations.delete", _nothing, id=str(automation_id))

    @staticmethod
    def pause_automation(automation_id: UUID | str) -> Request[Automation]:
        return _request("automations.pause", _automation, id=str(automation_id))

    @staticmethod
    def resume_automation(automation_id: UUID | str) -> Request[Automation]:
        return _request("automations.resume", _automation, id=str(automation_id))

    @staticmethod
    def explain(automation_id: UUID | str) -> Request[Explanation]:
        return _request("automations.explain", _typed("automations.explain"), id=str(automation_id))

    @staticmethod
    def emit(events: Iterable[EventLike]) -> Request[list[int]]:
        documents = [_event_doc(e) for e in events]
        return _request("events.emit", lambda r: list(r["seqs"]), events=documents)

    @staticmethod
    def filter_events(
        names: Sequence[str] = (),
        resource_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        by_arrival: bool = False,
    ) -> Request[list[dict[str, Any]]]:
        return _request(
            "events.filter",
            _documents,
            names=list(names) or None,
            resource_id=resource_id,
            since=None if since is None else since.isoformat(),
            until=None if until is None else until.isoformat(),
            limit=limit,
            after_seq=after_seq,
            by_seq=by_arrival or None,
        )

    @staticmethod
    def create_block(block: BlockDocument | Mapping[str, Any]) -> Request[BlockDocument]:
        return _request("blocks.create", _block, block=_block_doc(block))

    @staticmethod
    def read_block(block_id: UUID | str) -> Request[BlockDocument]:
        return _request("blocks.read", _block, id=str(block_id))

    @staticmethod
    def read_block_by_name(block_type_slug: str, name: str) -> Request[BlockDocument]:
        return _request("blocks.read_by_name", _block, block_type_slug=block_type_slug, name=name)

    @staticmethod
    def list_blocks(block_type_slug: str | None = None) -> Request[list[dict[str, Any]]]:
        return _request("blocks.filter", _documents, block_type_slug=block_type_slug)

    @staticmethod
    def delete_block(block_id: UUID | str) -> Request[None]:
        return _request("blocks.delete", _nothing, id=str(block_id))

    @staticmethod
    def create_webhook(
        name: str, template: str | Mapping[str, Any], description: str = "", enabled: bool = True
    ) -> Request[dict[str, Any]]:
        webhook = {
            "name": name,
            "template": _template_param(template),
            "description": description,
            "enabled": enabled,
        }
        return _request("webhooks.create", _document, webhook=webhook)

    @staticmethod
    def read_webhook(webhook_id: UUID | str) -> Request[dict[str, Any]]:
        return _request("webhooks.read", _document, id=str(webhook_id))

    @staticmethod
    def read_webhook_by_name(name: str) -> Request[dict[str, Any]]:
        return _request("webhooks.read_by_name", _document, name=name)

    @staticmethod
    def list_webhooks(
        name_prefix: str | None = None, enabled: bool | None = None
    ) -> Request[list[dict[str, Any]]]:
        return _request("webhooks.filter", _documents, name_prefix=name_prefix, enabled=enabled)

    @staticmethod
    def update_webhook(
        webhook_id: UUID | str,
        name: str | None = None,
        template: str | Mapping[str, Any] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Request[dict[str, Any]]:
        return _request(
            "webhooks.update",
            _document,
            id=str(webhook_id),
            name=name,
            template=None if template is None else _template_param(template),
            description=description,
            enabled=enabled,
        )

    @staticmethod
    def rotate_webhook(webhook_id: UUID | str) -> Request[dict[str, Any]]:
        return _request("webhooks.rotate", _document, id=str(webhook_id))

    @staticmethod
    def delete_webhook(webhook_id: UUID | str) -> Request[None]:
        return _request("webhooks.delete", _nothing, id=str(webhook_id))

    @staticmethod
    def list_incidents(
        automation_id: UUID | str | None = None, status: str | None = None, limit: int = 100
    ) -> Request[list[dict[str, Any]]]:
        return _request(
            "incidents.filter",
            _documents,
            automation_id=None if automation_id is None else str(automation_id),
            status=status,
            limit=limit,
        )

    @staticmethod
    def read_incident(incident_id: UUID | str) -> Request[dict[str, Any]]:
        return _request("incidents.read", _document, id=str(incident_id))

    @staticmethod
    def resolve_incident(incident_id: UUID | str) -> Request[dict[str, Any]]:
        return _request("incidents.resolve", _document, id=str(incident_id))

    @staticmethod
    def checkpoint() -> Request[dict[str, Any]]:
        return _request("admin.checkpoint", _document)

    @staticmethod
    def backup(path: str) -> Request[dict[str, Any]]:
        return _request("admin.backup", _document, path=path)


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
            curve=_curve(server_key, client_key),
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
                wait.last = None  # no reply (yet, or any more)
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

    def explain(self, automation_id: UUID | str) -> Explanation:
        """An automation's live state: buckets per trigger and key, its next deadline."""
        return self.send(Requests.explain(automation_id))

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
        filter applies either way."""
        return self.send(
            Requests.filter_events(names, resource_id, since, until, limit, after_seq, by_arrival)
        )

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
            curve=_curve(server_key, client_key),
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
                wait.last = None
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

    async def explain(self, automation_id: UUID | str) -> Explanation:
        """An automation's live state: buckets per trigger and key, its next deadline."""
        return await self.send(Requests.explain(automation_id))

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
        filter applies either way."""
        return await self.send(
            Requests.filter_events(names, resource_id, since, until, limit, after_seq, by_arrival)
        )

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


class Publisher:
    """Sends events to the daemon's ingest socket over ZeroMQ PUSH, in batches.

    Fire and forget (use ``Client.emit`` for acknowledged delivery): events are
    buffered and sent as one frame when ``batch_size`` is reached, on
    ``flush()``, and on close.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        batch_size: int = 100,
        server_key: str | None = None,
        client_key: str | None = None,
    ) -> None:
        """``server_key``/``client_key``: CURVE, as for ``Client``."""
        self.url = url or os.environ.get("MARMOT_INGEST_URL") or DEFAULT_INGEST_URL
        self.batch_size = batch_size
        curve = _curve(server_key, client_key)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 5000)
        if curve is not None:
            curve.secure(self._socket)
        self._socket.connect(self.url)
        self._buffer: list[Event] = []
        self.sent = 0

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def publish(self, event: Event | Mapping[str, Any]) -> None:
        """Queue one event (a model or a Prefect-shaped dict; validated here)."""
        self._buffer.append(event if isinstance(event, Event) else Event.model_validate(event))
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Send the buffered events as one frame."""
        if self._buffer:
            self._socket.send(events_frame(self._buffer))
            self.sent += len(self._buffer)
            self._buffer.clear()

    def close(self) -> None:
        """Flush and close the socket (waiting up to 5 s for delivery)."""
        self.flush()
        self._socket.close()
