"""The RPC methods: request params in, JSON-safe results out, over ``Service``.

Methods are named ``noun.verb`` (DESIGN.md). Every handler validates its
params with pydantic, so a bad request gets a structured error with field
paths, and the service never sees unvalidated data.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from marmot.actors.service import Service
from marmot.actors.store import StoredAutomation, StoredWebhook
from marmot.engine.models.blocks import BlockDocument, BlockTypeSlug
from marmot.engine.models.events import Event, EventLimits
from marmot.engine.templates.checks import validated_automation, validated_webhook

VERSION = version("marmot")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
_Method = Callable[["Api", dict[str, Any]], Awaitable[Any]]

# SQLite integers are 64-bit signed; larger numbers cannot be bound.
_SQL_INT_MAX = 2**63 - 1


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ById(_Params):
    id: UUID


class _ByName(_Params):
    name: str


class _Create(_Params):
    automation: dict[str, Any]


class _Update(_Params):
    id: UUID
    automation: dict[str, Any]


class _Filter(_Params):
    name_prefix: str | None = None
    enabled: bool | None = None
    tags: list[str] = Field(default_factory=list, max_length=1000)
    limit: int | None = Field(default=None, ge=1, le=_SQL_INT_MAX)
    offset: int = Field(default=0, ge=0, le=_SQL_INT_MAX)


class _Emit(_Params):
    events: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)


class _EventFilter(_Params):
    names: list[str] = Field(default_factory=list, max_length=1000)
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=100, ge=1, le=10_000)
    descending: bool = True
    by_seq: bool = False
    after_seq: int | None = Field(default=None, ge=0, le=_SQL_INT_MAX)


class _CreateBlock(_Params):
    block: dict[str, Any]


class _BlockByName(_Params):
    block_type_slug: BlockTypeSlug
    name: str


class _BlockFilter(_Params):
    block_type_slug: BlockTypeSlug | None = None


class _IncidentFilter(_Params):
    automation_id: UUID | None = None
    status: Literal["open", "resolved"] | None = None
    limit: int = Field(default=100, ge=1, le=10_000)


class _CreateWebhook(_Params):
    webhook: dict[str, Any]


class _UpdateWebhook(_Params):
    # Only the fields given change; the slug is never the user's to set.
    id: UUID
    name: str | None = None
    description: str | None = None
    enabled: bool | None = None
    template: str | dict[str, Any] | None = None


class _WebhookFilter(_Params):
    name_prefix: str | None = None
    enabled: bool | None = None


class _Backup(_Params):
    path: str = Field(min_length=1)


def stored_view(stored: StoredAutomation) -> dict[str, Any]:
    """An automation as returned to clients: the document plus bookkeeping."""
    return {
        **stored.automation.model_dump(mode="json"),
        "created": stored.created.isoformat(),
        "updated": stored.updated.isoformat(),
        "version": stored.version,
    }


def event_view(seq: int, event: Event) -> dict[str, Any]:
    """An event as returned to clients, with its log sequence number."""
    return {"seq": seq, **event.model_dump(mode="json")}


class Api:
    """Binds RPC method names to ``Service`` operations."""

    def __init__(
        self,
        service: Service,
        limits: EventLimits,
        clock: Callable[[], datetime],
        *,
        hooks_url: str | None = None,
    ) -> None:
        """``hooks_url`` is where webhook URLs start, up to the slug (None: no HTTP server)."""
        self.service = service
        self.limits = limits
        self._now = clock
        self.hooks_url = hooks_url
        self._events = TypeAdapter(list[Event])

    @classmethod
    def methods(cls) -> dict[str, _Method]:
        """Method name -> unbound handler: the API's method names without a service."""
        return {
            "health": cls.health,
            "status": cls.status,
            "automations.create": cls.create,
            "automations.read": cls.read,
            "automations.read_by_name": cls.read_by_name,
            "automations.filter": cls.filter,
            "automations.update": cls.update,
            "automations.delete": cls.delete,
            "automations.pause": cls.pause,
            "automations.resume": cls.resume,
            "automations.explain": cls.explain,
            "events.emit": cls.emit,
            "events.filter": cls.filter_events,
            "blocks.create": cls.create_block,
            "blocks.read": cls.read_block,
            "blocks.read_by_name": cls.read_block_by_name,
            "blocks.filter": cls.filter_blocks,
            "blocks.delete": cls.delete_block,
            "webhooks.create": cls.create_webhook,
            "webhooks.read": cls.read_webhook,
            "webhooks.read_by_name": cls.read_webhook_by_name,
            "webhooks.filter": cls.filter_webhooks,
            "webhooks.update": cls.update_webhook,
            "webhooks.rotate": cls.rotate_webhook,
            "webhooks.delete": cls.delete_webhook,
            "incidents.read": cls.read_incident,
            "incidents.filter": cls.filter_incidents,
            "incidents.resolve": cls.resolve_incident,
            "admin.checkpoint": cls.admin_checkpoint,
            "admin.backup": cls.admin_backup,
        }

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler, for the RPC server."""
        return {name: functools.partial(method, self) for name, method in self.methods().items()}

    async def health(self, params: dict[str, Any]) -> dict[str, Any]:
        _Params.model_validate(params)
        return {"ok": True, "state": "serving", "version": VERSION}

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        _Params.model_validate(params)
        return {"version": VERSION, "state": "serving", **self.service.status()}

    async def create(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _Create.model_validate(params)
        automation = validated_automation(p.automation)
        return stored_view(await self.service.create(automation))

    async def read(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return stored_view(self.service.store.automations.read(p.id))

    async def read_by_name(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ByName.model_validate(params)
        return stored_view(self.service.store.automations.read_by_name(p.name))

    async def filter(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        p = _Filter.model_validate(params)
        found = self.service.store.automations.list(
            name_prefix=p.name_prefix,
            enabled=p.enabled,
            tags=p.tags,
            limit=p.limit,
            offset=p.offset,
        )
        return [stored_view(s) for s in found]

    async def update(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _Update.model_validate(params)
        document = {**p.automation, "id": str(p.id)}
        automation = validated_automation(document)
        return stored_view(await self.service.update(automation))

    async def delete(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        await self.service.delete(p.id)
        return {"deleted": str(p.id)}

    async def pause(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return stored_view(await self.service.set_enabled(p.id, False))

    async def resume(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return stored_view(await self.service.set_enabled(p.id, True))

    async def explain(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return await self.service.explain(p.id)

    async def emit(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _Emit.model_validate(params)
        context = {"limits": self.limits, "received": self._now().astimezone(UTC)}
        events = self._events.validate_python(p.events, context=context)
        seqs = await self.service.emit(events)
        return {"seqs": seqs, "ids": [str(e.id) for e in events]}

    async def filter_events(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        p = _EventFilter.model_validate(params)
        store = self.service.store
        if p.after_seq is not None:
            rows = store.events.read_after(p.after_seq, limit=p.limit)
        else:
            rows = store.events.filter(
                names=p.names,
                resource_id=p.resource_id,
                since=p.since,
                until=p.until,
                limit=p.limit,
                descending=p.descending,
                by_seq=p.by_seq,
            )
        return [event_view(seq, e) for seq, e in rows]

    # -- blocks: results are public views, secrets always masked ------------------------

    async def create_block(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _CreateBlock.model_validate(params)
        block = BlockDocument.model_validate(p.block)
        return self.service.store.blocks.create(block).public_view()

    async def read_block(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return self.service.store.blocks.read(p.id).public_view()

    async def read_block_by_name(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _BlockByName.model_validate(params)
        return self.service.store.blocks.read_by_name(p.block_type_slug, p.name).public_view()

    async def filter_blocks(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        p = _BlockFilter.model_validate(params)
        return [b.public_view() for b in self.service.store.blocks.list(p.block_type_slug)]

    async def delete_block(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        self.service.store.blocks.delete(p.id)
        return {"deleted": str(p.id)}

    # -- webhooks: results carry the URL (``url``), from hooks_url and the slug --------

    def _webhook_view(self, webhook: StoredWebhook) -> dict[str, Any]:
        return webhook.to_json(self.hooks_url)

    async def create_webhook(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _CreateWebhook.model_validate(params)
        spec = validated_webhook(p.webhook)
        return self._webhook_view(self.service.store.webhooks.create(spec))

    async def read_webhook(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return self._webhook_view(self.service.store.webhooks.read(p.id))

    async def read_webhook_by_name(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ByName.model_validate(params)
        return self._webhook_view(self.service.store.webhooks.read_by_name(p.name))

    async def filter_webhooks(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        p = _WebhookFilter.model_validate(params)
        found = self.service.store.webhooks.list(name_prefix=p.name_prefix, enabled=p.enabled)
        return [self._webhook_view(w) for w in found]

    async def update_webhook(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _UpdateWebhook.model_validate(params)
        store = self.service.store
        current = store.webhooks.read(p.id).spec().model_dump()
        fields = ("name", "description", "enabled", "template")
        changes = {k: getattr(p, k) for k in fields if getattr(p, k) is not None}
        spec = validated_webhook({**current, **changes})
        return self._webhook_view(store.webhooks.update(p.id, spec))

    async def rotate_webhook(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return self._webhook_view(self.service.store.webhooks.rotate(p.id))

    async def delete_webhook(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        self.service.store.webhooks.delete(p.id)
        return {"deleted": str(p.id)}

    # -- incidents ----------------------------------------------------------------------

    async def read_incident(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return self.service.store.incidents.read(p.id).to_json()

    async def filter_incidents(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        p = _IncidentFilter.model_validate(params)
        found = self.service.store.incidents.list(
            automation_id=p.automation_id, status=p.status, limit=p.limit
        )
        return [i.to_json() for i in found]

    async def resolve_incident(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _ById.model_validate(params)
        return self.service.store.incidents.set_status(p.id, "resolved").to_json()

    # -- operations ---------------------------------------------------------------------

    async def admin_checkpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        _Params.model_validate(params)
        return await self.service.maintain()

    async def admin_backup(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _Backup.model_validate(params)
        path = os.path.abspath(os.path.expanduser(p.path))
        size = await asyncio.to_thread(self.service.store.db.backup, path)
        return {"path": path, "bytes": size}
