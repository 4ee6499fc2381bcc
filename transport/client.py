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
from datetime import datetime
from types import TracebackType
from typing import Any
from uuid import UUID

import zmq

from marmot.engine.errors import DaemonUnavailable
from marmot.engine.models.automations import Automation
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.models.events import Event
from marmot.transport.codec import encode_events
from marmot.transport.curve import ClientCurve
from marmot.transport.rpc import AsyncRpcClient, RpcClient

DEFAULT_RPC_URL = "tcp://127.0.0.1:7601"
DEFAULT_INGEST_URL = "tcp://127.0.0.1:7600"
# How often wait_ready asks a daemon that is not serving yet.
READY_POLL_S = 0.2

ProgressCallback = Callable[[dict[str, Any]], None]


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


def _automation_doc(automation: Automation | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(automation, Automation):
        return automation.model_dump(mode="json")
    return dict(automation)


def _event_doc(event: Event | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(event, Event):
        return event.model_dump(mode="json", exclude={"received"})
    return dict(event)


def _filter_params(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None and v != []}


def is_serving(health: Mapping[str, Any]) -> bool:
    """Whether a ``health`` reply says the daemon serves every method."""
    # Daemons from before start-up states reply without "state" once serving.
    return health.get("ok") is True and health.get("state", "serving") == "serving"


class _ReadyWait:
    """The deadline and last answer of a ``wait_ready``, shared by both clients."""

    def __init__(self, url: str, timeout_s: float, call_timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.call_timeout_s = call_timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.last: dict[str, Any] | None = None

    def next_call_timeout_s(self) -> float:
        """How long the next ``health`` call may wait: never past the deadline."""
        return max(min(self.call_timeout_s, self.deadline - time.monotonic()), 0.001)

    def pause_s(self) -> float | None:
        """Seconds to wait before asking again, or None when the deadline has passed."""
        remaining = self.deadline - time.monotonic()
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


class _Calls:
    """Request building shared by the sync and async clients."""

    @staticmethod
    def create(automation: Automation | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return "automations.create", {"automation": _automation_doc(automation)}

    @staticmethod
    def update(
        automation_id: UUID | str, automation: Automation | Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        document = _automation_doc(automation)
        document.pop("id", None)
        return "automations.update", {"id": str(automation_id), "automation": document}

    @staticmethod
    def emit(events: Iterable[Event | Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
        return "events.emit", {"events": [_event_doc(e) for e in events]}

    @staticmethod
    def create_webhook(
        name: str, template: str | Mapping[str, Any], description: str, enabled: bool
    ) -> tuple[str, dict[str, Any]]:
        webhook = {
            "name": name,
            "template": _template_param(template),
            "description": description,
            "enabled": enabled,
        }
        return "webhooks.create", {"webhook": webhook}

    @staticmethod
    def update_webhook(
        webhook_id: UUID | str,
        name: str | None,
        template: str | Mapping[str, Any] | None,
        description: str | None,
        enabled: bool | None,
    ) -> tuple[str, dict[str, Any]]:
        params = _filter_params(
            id=str(webhook_id),
            name=name,
            template=None if template is None else _template_param(template),
            description=description,
            enabled=enabled,
        )
        return "webhooks.update", params


def _template_param(template: str | Mapping[str, Any]) -> str | dict[str, Any]:
    # A mapping is the event's JSON, with Jinja in its strings; the daemon writes it out.
    return template if isinstance(template, str) else dict(template)


def _block_doc(block: BlockDocument | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(block, BlockDocument):
        return block.create_document()
    return dict(block)


def _block_of(result: Mapping[str, Any]) -> BlockDocument:
    # The server masks secrets: they arrive (and stay) as "********".
    return BlockDocument.model_validate(result)


def _automation_of(result: Mapping[str, Any]) -> Automation:
    fields = {k: v for k, v in result.items() if k not in ("created", "updated", "version")}
    return Automation.model_validate(fields)


class Client:
    """A synchronous client of the daemon's RPC API.

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
    ) -> None:
        self.url = _rpc_url(url)
        self._rpc = RpcClient(
            self.url,
            token=_token(token),
            timeout_s=timeout_s,
            curve=_curve(server_key, client_key),
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

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call any RPC method by name."""
        return self._rpc.call(method, dict(params or {}))

    def health(self) -> dict[str, Any]:
        """The daemon's state: ``{"ok": true, "state": "serving", "version"}`` once it
        serves; while it starts ``"ok": false, "state": "starting"`` with ``phase``,
        ``automations_recovered``, ``automations_total`` and ``elapsed_s``."""
        return dict(self.call("health"))

    def wait_ready(
        self, timeout_s: float = 300.0, *, on_progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Wait until the daemon serves (e.g. after ``marmot serve &``); returns its health.

        Asks ``health`` every ``READY_POLL_S`` while the daemon does not answer
        yet or is starting; ``on_progress`` gets each reply of a starting
        daemon. Raises ``DaemonUnavailable`` if it does not serve within
        ``timeout_s``, with the last reply as ``details`` (None if none came).
        """
        wait = _ReadyWait(self.url, timeout_s, self._rpc.timeout_s)
        while True:
            try:
                health = dict(self._rpc.call("health", timeout_s=wait.next_call_timeout_s()))
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

    def status(self) -> dict[str, Any]:
        """Counts, queue depths and remaining capacity, with ``state: serving``; while
        the daemon starts, its ``state`` (``starting``) and progress (see ``health``)."""
        return dict(self.call("status"))

    def create_automation(self, automation: Automation | Mapping[str, Any]) -> Automation:
        """Create an automation; returns it with its id."""
        return _automation_of(self.call(*_Calls.create(automation)))

    def read_automation(self, automation_id: UUID | str) -> Automation:
        """The automation with this id (``NotFound`` otherwise)."""
        return _automation_of(self.call("automations.read", {"id": str(automation_id)}))

    def read_automation_by_name(self, name: str) -> Automation:
        """The automation with this name (``NotFound`` otherwise)."""
        return _automation_of(self.call("automations.read_by_name", {"name": name}))

    def list_automations(
        self,
        *,
        name_prefix: str | None = None,
        enabled: bool | None = None,
        tags: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Automations with their ``created``/``updated``/``version``, sorted by name."""
        params = _filter_params(
            name_prefix=name_prefix, enabled=enabled, tags=list(tags), limit=limit
        )
        return list(self.call("automations.filter", params))

    def update_automation(
        self, automation_id: UUID | str, automation: Automation | Mapping[str, Any]
    ) -> Automation:
        """Replace an automation (its trigger state resets)."""
        return _automation_of(self.call(*_Calls.update(automation_id, automation)))

    def delete_automation(self, automation_id: UUID | str) -> None:
        """Delete an automation."""
        self.call("automations.delete", {"id": str(automation_id)})

    def pause_automation(self, automation_id: UUID | str) -> Automation:
        """Stop evaluating an automation (its state is forgotten)."""
        return _automation_of(self.call("automations.pause", {"id": str(automation_id)}))

    def resume_automation(self, automation_id: UUID | str) -> Automation:
        """Start evaluating a paused automation again."""
        return _automation_of(self.call("automations.resume", {"id": str(automation_id)}))

    def explain(self, automation_id: UUID | str) -> dict[str, Any]:
        """An automation's live buckets and next deadline."""
        return dict(self.call("automations.explain", {"id": str(automation_id)}))

    def emit(self, events: Iterable[Event | Mapping[str, Any]]) -> list[int]:
        """Send events; returns their log sequence numbers once they are durable."""
        return list(self.call(*_Calls.emit(events))["seqs"])

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
        """Events from the log, newest first by ``occurred`` (by arrival with
        ``by_arrival``), or those after ``after_seq``, oldest first."""
        params = _filter_params(
            by_seq=by_arrival or None,
            names=list(names),
            resource_id=resource_id,
            since=since,
            until=until,
            limit=limit,
            after_seq=after_seq,
        )
        return list(self.call("events.filter", params))

    def create_block(self, block: BlockDocument | Mapping[str, Any]) -> BlockDocument:
        """Store a notification block; returns it as stored, secrets masked."""
        return _block_of(self.call("blocks.create", {"block": _block_doc(block)}))

    def read_block(self, block_id: UUID | str) -> BlockDocument:
        """The block with this id, secrets masked (``NotFound`` otherwise)."""
        return _block_of(self.call("blocks.read", {"id": str(block_id)}))

    def read_block_by_name(self, block_type_slug: str, name: str) -> BlockDocument:
        """The block of this type and name, secrets masked (``NotFound`` otherwise)."""
        params = {"block_type_slug": block_type_slug, "name": name}
        return _block_of(self.call("blocks.read_by_name", params))

    def list_blocks(self, block_type_slug: str | None = None) -> list[dict[str, Any]]:
        """Blocks (of one type, if given) as public views, sorted by type and name."""
        params = _filter_params(block_type_slug=block_type_slug)
        return list(self.call("blocks.filter", params))

    def delete_block(self, block_id: UUID | str) -> None:
        """Delete a block."""
        self.call("blocks.delete", {"id": str(block_id)})

    # -- webhooks: each is returned as a mapping with its ``url`` --------------------

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
        return dict(self.call(*_Calls.create_webhook(name, template, description, enabled)))

    def read_webhook(self, webhook_id: UUID | str) -> dict[str, Any]:
        """The webhook with this id (``NotFound`` otherwise)."""
        return dict(self.call("webhooks.read", {"id": str(webhook_id)}))

    def read_webhook_by_name(self, name: str) -> dict[str, Any]:
        """The webhook with this name (``NotFound`` otherwise)."""
        return dict(self.call("webhooks.read_by_name", {"name": name}))

    def list_webhooks(
        self, *, name_prefix: str | None = None, enabled: bool | None = None
    ) -> list[dict[str, Any]]:
        """Webhooks, sorted by name."""
        params = _filter_params(name_prefix=name_prefix, enabled=enabled)
        return list(self.call("webhooks.filter", params))

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
        call = _Calls.update_webhook(webhook_id, name, template, description, enabled)
        return dict(self.call(*call))

    def rotate_webhook(self, webhook_id: UUID | str) -> dict[str, Any]:
        """Give a webhook a new URL; the old one stops working at once."""
        return dict(self.call("webhooks.rotate", {"id": str(webhook_id)}))

    def delete_webhook(self, webhook_id: UUID | str) -> None:
        """Delete a webhook."""
        self.call("webhooks.delete", {"id": str(webhook_id)})

    def list_incidents(
        self,
        *,
        automation_id: UUID | str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Declared incidents, newest first."""
        params = _filter_params(
            automation_id=None if automation_id is None else str(automation_id),
            status=status,
            limit=limit,
        )
        return list(self.call("incidents.filter", params))

    def read_incident(self, incident_id: UUID | str) -> dict[str, Any]:
        """One incident."""
        return dict(self.call("incidents.read", {"id": str(incident_id)}))

    def resolve_incident(self, incident_id: UUID | str) -> dict[str, Any]:
        """Mark an incident resolved."""
        return dict(self.call("incidents.resolve", {"id": str(incident_id)}))

    def checkpoint(self) -> dict[str, Any]:
        """Checkpoint every automation, trim the event log, fold the WAL into the database."""
        return dict(self.call("admin.checkpoint"))

    def backup(self, path: str) -> dict[str, Any]:
        """Copy the daemon's database to a new file at ``path`` (on the daemon's machine)."""
        return dict(self.call("admin.backup", {"path": path}))


class AsyncClient:
    """An asyncio client of the daemon's RPC API (same methods and options, awaitable)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        server_key: str | None = None,
        client_key: str | None = None,
    ) -> None:
        self.url = _rpc_url(url)
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

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call any RPC method by name."""
        return await self._rpc.call(method, dict(params or {}))

    async def health(self) -> dict[str, Any]:
        """The daemon's state (see ``Client.health``)."""
        return dict(await self.call("health"))

    async def wait_ready(
        self, timeout_s: float = 300.0, *, on_progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Wait until the daemon serves; returns its health (see ``Client.wait_ready``)."""
        wait = _ReadyWait(self.url, timeout_s, self._rpc.timeout_s)
        while True:
            try:
                reply = await self._rpc.call("health", timeout_s=wait.next_call_timeout_s())
            except DaemonUnavailable:
                wait.last = None
            else:
                health = dict(reply)
                if is_serving(health):
                    return health
                wait.last = health
                if on_progress is not None:
                    on_progress(health)
            pause = wait.pause_s()
            if pause is None:
                raise wait.timed_out()
            await asyncio.sleep(pause)

    async def status(self) -> dict[str, Any]:
        """Counts, queue depths and remaining capacity, or the start-up progress."""
        return dict(await self.call("status"))

    async def create_automation(self, automation: Automation | Mapping[str, Any]) -> Automation:
        """Create an automation; returns it with its id."""
        return _automation_of(await self.call(*_Calls.create(automation)))

    async def read_automation(self, automation_id: UUID | str) -> Automation:
        """The automation with this id."""
        return _automation_of(await self.call("automations.read", {"id": str(automation_id)}))

    async def read_automation_by_name(self, name: str) -> Automation:
        """The automation with this name."""
        return _automation_of(await self.call("automations.read_by_name", {"name": name}))

    async def update_automation(
        self, automation_id: UUID | str, automation: Automation | Mapping[str, Any]
    ) -> Automation:
        """Replace an automation (its trigger state resets)."""
        return _automation_of(await self.call(*_Calls.update(automation_id, automation)))

    async def delete_automation(self, automation_id: UUID | str) -> None:
        """Delete an automation."""
        await self.call("automations.delete", {"id": str(automation_id)})

    async def pause_automation(self, automation_id: UUID | str) -> Automation:
        """Stop evaluating an automation."""
        return _automation_of(await self.call("automations.pause", {"id": str(automation_id)}))

    async def resume_automation(self, automation_id: UUID | str) -> Automation:
        """Start evaluating a paused automation again."""
        return _automation_of(await self.call("automations.resume", {"id": str(automation_id)}))

    async def explain(self, automation_id: UUID | str) -> dict[str, Any]:
        """An automation's live buckets and next deadline."""
        return dict(await self.call("automations.explain", {"id": str(automation_id)}))

    async def emit(self, events: Iterable[Event | Mapping[str, Any]]) -> list[int]:
        """Send events; returns their sequence numbers once they are durable."""
        return list((await self.call(*_Calls.emit(events)))["seqs"])

    async def create_block(self, block: BlockDocument | Mapping[str, Any]) -> BlockDocument:
        """Store a notification block; returns it as stored, secrets masked."""
        return _block_of(await self.call("blocks.create", {"block": _block_doc(block)}))

    async def read_block(self, block_id: UUID | str) -> BlockDocument:
        """The block with this id, secrets masked."""
        return _block_of(await self.call("blocks.read", {"id": str(block_id)}))

    async def read_block_by_name(self, block_type_slug: str, name: str) -> BlockDocument:
        """The block of this type and name, secrets masked."""
        params = {"block_type_slug": block_type_slug, "name": name}
        return _block_of(await self.call("blocks.read_by_name", params))

    async def list_blocks(self, block_type_slug: str | None = None) -> list[dict[str, Any]]:
        """Blocks (of one type, if given) as public views, sorted by type and name."""
        params = _filter_params(block_type_slug=block_type_slug)
        return list(await self.call("blocks.filter", params))

    async def delete_block(self, block_id: UUID | str) -> None:
        """Delete a block."""
        await self.call("blocks.delete", {"id": str(block_id)})

    # -- webhooks: each is returned as a mapping with its ``url`` --------------------

    async def create_webhook(
        self,
        name: str,
        template: str | Mapping[str, Any],
        *,
        description: str = "",
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Create a webhook; returns it with its id, slug and ``url``."""
        return dict(await self.call(*_Calls.create_webhook(name, template, description, enabled)))

    async def read_webhook(self, webhook_id: UUID | str) -> dict[str, Any]:
        """The webhook with this id (``NotFound`` otherwise)."""
        return dict(await self.call("webhooks.read", {"id": str(webhook_id)}))

    async def read_webhook_by_name(self, name: str) -> dict[str, Any]:
        """The webhook with this name (``NotFound`` otherwise)."""
        return dict(await self.call("webhooks.read_by_name", {"name": name}))

    async def list_webhooks(
        self, *, name_prefix: str | None = None, enabled: bool | None = None
    ) -> list[dict[str, Any]]:
        """Webhooks, sorted by name."""
        params = _filter_params(name_prefix=name_prefix, enabled=enabled)
        return list(await self.call("webhooks.filter", params))

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
        call = _Calls.update_webhook(webhook_id, name, template, description, enabled)
        return dict(await self.call(*call))

    async def rotate_webhook(self, webhook_id: UUID | str) -> dict[str, Any]:
        """Give a webhook a new URL; the old one stops working at once."""
        return dict(await self.call("webhooks.rotate", {"id": str(webhook_id)}))

    async def delete_webhook(self, webhook_id: UUID | str) -> None:
        """Delete a webhook."""
        await self.call("webhooks.delete", {"id": str(webhook_id)})

    async def list_incidents(
        self,
        *,
        automation_id: UUID | str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Declared incidents, newest first."""
        params = _filter_params(
            automation_id=None if automation_id is None else str(automation_id),
            status=status,
            limit=limit,
        )
        return list(await self.call("incidents.filter", params))

    async def read_incident(self, incident_id: UUID | str) -> dict[str, Any]:
        """One incident."""
        return dict(await self.call("incidents.read", {"id": str(incident_id)}))

    async def resolve_incident(self, incident_id: UUID | str) -> dict[str, Any]:
        """Mark an incident resolved."""
        return dict(await self.call("incidents.resolve", {"id": str(incident_id)}))

    async def checkpoint(self) -> dict[str, Any]:
        """Checkpoint every automation, trim the event log, fold the WAL into the database."""
        return dict(await self.call("admin.checkpoint"))

    async def backup(self, path: str) -> dict[str, Any]:
        """Copy the daemon's database to a new file at ``path`` (on the daemon's machine)."""
        return dict(await self.call("admin.backup", {"path": path}))


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
            self._socket.send(encode_events(self._buffer))
            self.sent += len(self._buffer)
            self._buffer.clear()

    def close(self) -> None:
        """Flush and close the socket (waiting up to 5 s for delivery)."""
        self.flush()
        self._socket.close()
