"""The RPC methods over ``Service``: the handlers of ``protocol.METHODS``.

Each handler takes its method's validated params model and returns a typed
result; ``Api.handlers`` wraps them so a request's params are validated
against the table (a bad request gets a structured error with field paths)
and results are dumped as the table says. The service never sees
unvalidated data.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pydantic import TypeAdapter, ValidationError

from marmot.actors.backtests import Backtests
from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.inspection import Inspector
from marmot.actors.service import Service
from marmot.actors.store import StoredAutomation, StoredWebhook
from marmot.actors.store.events import EventLog, LogPosition
from marmot.engine.clock import Clock
from marmot.engine.errors import LimitExceeded, ValidationFailed
from marmot.engine.models.automations import Automation
from marmot.engine.models.backtest import BacktestJob
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.models.events import Event, EventLimits
from marmot.engine.models.explain import Explanation
from marmot.engine.models.history import History, WhyReport
from marmot.engine.models.lint import LintReport
from marmot.engine.models.verdicts import TestReport
from marmot.engine.templates.checks import validated_automation, validated_webhook
from marmot.engine.timestamps import to_us
from marmot.transport import protocol as p
from marmot.transport.codec import pack_rpc
from marmot.transport.dry_runs import dry_run
from marmot.transport.protocol import METHODS, AutomationView, Method

__all__ = ["VERSION", "Api", "Handler", "automation_view"]

VERSION = version("marmot")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

# The events of events.emit, validated where their errors name the field:
# "events.0.occurred", as the request has it.
_EMITTED: TypeAdapter[dict[str, list[Event]]] = TypeAdapter(dict[str, list[Event]])


def automation_view(stored: StoredAutomation) -> AutomationView:
    """An automation as returned to clients: the document plus its bookkeeping."""
    # Its parts were validated when it was stored: put together, not validated again
    # (a fleet's listing would spend most of its time here).
    return AutomationView.model_construct(
        **dict(stored.automation),
        created=stored.created,
        updated=stored.updated,
        version=stored.version,
    )


@dataclass(frozen=True, slots=True)
class Dumped:
    """A handler's result already in its wire form: values ``pack_rpc`` packs as they
    are and the method's result type reads back (see ``automation_summary``)."""

    value: Any


def automation_summary(stored: StoredAutomation) -> dict[str, Any]:
    """An automation's line in a listing, as ``AutomationSummary`` reads it: a plain
    map, not a model (building 10,000 models only to dump them again took as long
    as the rest of ``automation ls``)."""
    automation = stored.automation
    return {
        "id": str(automation.id),
        "name": automation.name,
        "enabled": automation.enabled,
        "trigger": automation.trigger.type,
        "actions": [action.type for action in automation.actions],
        "tags": list(automation.tags),
        "updated": stored.updated,
        "version": stored.version,
    }


# What an events.filter reply holds besides its events: the reply's map and id,
# the page's map and cursor, the array's header.
_EVENTS_REPLY_OVERHEAD = 512


def _filtered_events(
    log: EventLog, params: p.EventFilter, page_bytes: int
) -> list[p.EventView] | p.EventPage:
    """``events.filter``'s result: a page of at most ``page_bytes``, or the whole
    list, refused (``LimitExceeded``) when over ``page_bytes``.

    The log stops reading at that many bytes of stored events (the wire form
    is never smaller); each event is then measured as it will travel.
    """
    budget = page_bytes - _EVENTS_REPLY_OVERHEAD
    after_seq = params.after_seq
    after = None if after_seq is None else LogPosition(after_seq, 0)
    if params.cursor is not None:
        last_seq, last_occurred_us = params.cursor.split(".")
        after = LogPosition(int(last_seq), int(last_occurred_us))
    found = log.page(
        names=params.names,
        resource_id=params.resource_id,
        since=params.since,
        until=params.until,
        limit=params.limit,
        descending=params.descending and after_seq is None,
        by_seq=params.by_seq or after_seq is not None,
        after=after,
        max_bytes=max(budget, 1),
    )
    # Stopped by its byte budget (not by ``limit``): a list would be over it.
    is_cut = found.has_more and len(found.rows) < params.limit
    if is_cut and not params.is_paged:
        raise _over_page(params.limit, page_bytes)
    views: list[p.EventView] = []
    size = 0
    for seq, event in found.rows:
        view = p.EventView.model_construct(seq=seq, **dict(event))
        size += len(pack_rpc(view.model_dump(mode="json")))
        if views and size > budget:
            break
        views.append(view)
    if not params.is_paged:
        if len(views) < len(found.rows):
            raise _over_page(params.limit, page_bytes)
        return views
    cursor = None
    if views and (len(views) < len(found.rows) or found.has_more):
        last = views[-1]
        cursor = f"{last.seq}.{to_us(last.occurred)}"
    return p.EventPage(events=views, next=cursor)


def _over_page(limit: int, page_bytes: int) -> LimitExceeded:
    return LimitExceeded(
        f"the {limit} events asked for are over the reply limit of {page_bytes} bytes "
        "(rpc.page_bytes); ask for fewer or read them in pages (page: true)",
        details={"limit": page_bytes},
    )


def _serve(method: Method[Any, Any], handler: Callable[[Any], Awaitable[Any]]) -> Handler:
    async def handle(params: dict[str, Any]) -> Any:
        result = await handler(method.params.model_validate(params))
        return result.value if isinstance(result, Dumped) else method.dump(result)

    return handle


class Api:
    """The handler of every RPC method, by name (see ``protocol.METHODS``)."""

    def __init__(
        self,
        service: Service,
        limits: EventLimits,
        clock: Clock = SYSTEM_CLOCK,
        *,
        hooks_url: str | None = None,
    ) -> None:
        """``hooks_url`` is where webhook URLs start, up to the slug (None: no HTTP server)."""
        self.service = service
        self.limits = limits
        self._clock = clock
        self.hooks_url = hooks_url
        self.backtests = Backtests(service.runtime, service.store, service.tasks, clock)

    def implementations(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        """Method name -> the handler taking its params model."""
        return {
            "health": self.health,
            "status": self.status,
            "automations.create": self.create,
            "automations.create_many": self.create_many,
            "automations.read": self.read,
            "automations.read_by_name": self.read_by_name,
            "automations.filter": self.filter,
            "automations.summaries": self.summaries,
            "automations.update": self.update,
            "automations.delete": self.delete,
            "automations.pause": self.pause,
            "automations.resume": self.resume,
            "automations.explain": self.explain,
            "automations.test": self.test_automation,
            "automations.history": self.automation_history,
            "automations.why": self.why,
            "automations.lint": self.lint_automations,
            "backtests.start": self.start_backtest,
            "backtests.read": self.read_backtest,
            "events.emit": self.emit,
            "events.filter": self.filter_events,
            "blocks.create": self.create_block,
            "blocks.read": self.read_block,
            "blocks.read_by_name": self.read_block_by_name,
            "blocks.filter": self.filter_blocks,
            "blocks.delete": self.delete_block,
            "webhooks.create": self.create_webhook,
            "webhooks.read": self.read_webhook,
            "webhooks.read_by_name": self.read_webhook_by_name,
            "webhooks.filter": self.filter_webhooks,
            "webhooks.update": self.update_webhook,
            "webhooks.rotate": self.rotate_webhook,
            "webhooks.delete": self.delete_webhook,
            "incidents.read": self.read_incident,
            "incidents.filter": self.filter_incidents,
            "incidents.resolve": self.resolve_incident,
            "admin.checkpoint": self.admin_checkpoint,
            "admin.backup": self.admin_backup,
        }

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler of raw params, for the RPC server."""
        implementations = self.implementations()
        return {name: _serve(method, implementations[name]) for name, method in METHODS.items()}

    async def health(self, params: p.NoParams) -> dict[str, Any]:
        return {"ok": True, "state": "serving", "version": VERSION}

    async def status(self, params: p.NoParams) -> dict[str, Any]:
        return {"version": VERSION, "state": "serving", **self.service.status()}

    # -- automations -------------------------------------------------------------------

    async def create(self, params: p.CreateAutomation) -> AutomationView:
        automation = validated_automation(params.automation)
        return automation_view(await self.service.create(automation))

    async def create_many(self, params: p.CreateAutomations) -> list[AutomationView]:
        automations = _validated_all(params.automations)
        return [automation_view(s) for s in await self.service.create_many(automations)]

    async def read(self, params: p.ById) -> AutomationView:
        return automation_view(self.service.store.automations.read(params.id))

    async def read_by_name(self, params: p.ByName) -> AutomationView:
        return automation_view(self.service.store.automations.read_by_name(params.name))

    async def filter(self, params: p.AutomationFilter) -> list[AutomationView]:
        return [automation_view(s) for s in self._listed(params)]

    async def summaries(self, params: p.AutomationFilter) -> Dumped:
        return Dumped([automation_summary(s) for s in self._listed(params)])

    def _listed(self, params: p.AutomationFilter) -> list[StoredAutomation]:
        return self.service.store.automations.list(
            name_prefix=params.name_prefix,
            enabled=params.enabled,
            tags=params.tags,
            limit=params.limit,
            offset=params.offset,
        )

    async def update(self, params: p.UpdateAutomation) -> AutomationView:
        automation = validated_automation({**params.automation, "id": str(params.id)})
        return automation_view(await self.service.update(automation))

    async def delete(self, params: p.ById) -> p.Deleted:
        await self.service.delete(params.id)
        return p.Deleted(deleted=params.id)

    async def pause(self, params: p.ById) -> AutomationView:
        return automation_view(await self.service.set_enabled(params.id, False))

    async def resume(self, params: p.ById) -> AutomationView:
        return automation_view(await self.service.set_enabled(params.id, True))

    async def explain(self, params: p.ExplainAutomation) -> Explanation:
        return await self.service.explain(params.id, limit=params.limit, offset=params.offset)

    async def test_automation(self, params: p.TestAutomation) -> TestReport:
        return await dry_run(self.service, params, self.limits, self._clock)

    async def automation_history(self, params: p.AutomationHistory) -> History:
        inspector = Inspector(self.service, self._clock)
        return await inspector.history(
            params.id, since=params.since, limit=params.limit, cursor=params.cursor
        )

    async def why(self, params: p.WhyEvent) -> WhyReport:
        return await Inspector(self.service, self._clock).why(params.id, params.event_id)

    async def lint_automations(self, params: p.LintAutomations) -> list[LintReport]:
        return await Inspector(self.service, self._clock).lint(params.automations)

    async def start_backtest(self, params: p.StartBacktest) -> BacktestJob:
        automations = [validated_automation(a) for a in params.automations]
        return self.backtests.start(
            automations,
            since=params.since,
            until=params.until,
            compare=params.compare,
            resolve=self.service.config.resolved_states,
        )

    async def read_backtest(self, params: p.ById) -> BacktestJob:
        return self.backtests.read(params.id)

    # -- events ------------------------------------------------------------------------

    async def emit(self, params: p.Emit) -> p.Emitted:
        context = {"limits": self.limits, "received": self._clock.now()}
        events = _EMITTED.validate_python({"events": params.events}, context=context)["events"]
        seqs = await self.service.emit(events)
        return p.Emitted(seqs=seqs, ids=[e.id for e in events])

    async def filter_events(self, params: p.EventFilter) -> list[p.EventView] | p.EventPage:
        # Off the event loop: a page may take tens of milliseconds to read and build.
        rpc = self.service.config.rpc
        return await asyncio.to_thread(
            _filtered_events, self.service.store.events, params, rpc.page_bytes
        )

    # -- blocks: results are public views, secrets always masked ------------------------

    async def create_block(self, params: p.CreateBlock) -> dict[str, Any]:
        block = BlockDocument.model_validate(params.block)
        return self.service.store.blocks.create(block).public_view()

    async def read_block(self, params: p.ById) -> dict[str, Any]:
        return self.service.store.blocks.read(params.id).public_view()

    async def read_block_by_name(self, params: p.BlockByName) -> dict[str, Any]:
        blocks = self.service.store.blocks
        return blocks.read_by_name(params.block_type_slug, params.name).public_view()

    async def filter_blocks(self, params: p.BlockFilter) -> list[dict[str, Any]]:
        return [b.public_view() for b in self.service.store.blocks.list(params.block_type_slug)]

    async def delete_block(self, params: p.ById) -> p.Deleted:
        self.service.store.blocks.delete(params.id)
        return p.Deleted(deleted=params.id)

    # -- webhooks: results carry the URL (``url``), from hooks_url and the slug --------

    def _webhook_view(self, webhook: StoredWebhook) -> dict[str, Any]:
        return webhook.to_json(self.hooks_url)

    async def create_webhook(self, params: p.CreateWebhook) -> dict[str, Any]:
        spec = validated_webhook(params.webhook)
        return self._webhook_view(self.service.store.webhooks.create(spec))

    async def read_webhook(self, params: p.ById) -> dict[str, Any]:
        return self._webhook_view(self.service.store.webhooks.read(params.id))

    async def read_webhook_by_name(self, params: p.ByName) -> dict[str, Any]:
        return self._webhook_view(self.service.store.webhooks.read_by_name(params.name))

    async def filter_webhooks(self, params: p.WebhookFilter) -> list[dict[str, Any]]:
        found = self.service.store.webhooks.list(
            name_prefix=params.name_prefix, enabled=params.enabled
        )
        return [self._webhook_view(w) for w in found]

    async def update_webhook(self, params: p.UpdateWebhook) -> dict[str, Any]:
        webhooks = self.service.store.webhooks
        current = webhooks.read(params.id).spec().model_dump()
        fields = ("name", "description", "enabled", "template")
        changes = {k: getattr(params, k) for k in fields if getattr(params, k) is not None}
        spec = validated_webhook({**current, **changes})
        return self._webhook_view(webhooks.update(params.id, spec))

    async def rotate_webhook(self, params: p.ById) -> dict[str, Any]:
        return self._webhook_view(self.service.store.webhooks.rotate(params.id))

    async def delete_webhook(self, params: p.ById) -> p.Deleted:
        self.service.store.webhooks.delete(params.id)
        return p.Deleted(deleted=params.id)

    # -- incidents ----------------------------------------------------------------------

    async def read_incident(self, params: p.ById) -> dict[str, Any]:
        return self.service.store.incidents.read(params.id).to_json()

    async def filter_incidents(self, params: p.IncidentFilter) -> list[dict[str, Any]]:
        found = self.service.store.incidents.list(
            automation_id=params.automation_id, status=params.status, limit=params.limit
        )
        return [i.to_json() for i in found]

    async def resolve_incident(self, params: p.ById) -> dict[str, Any]:
        return self.service.store.incidents.set_status(params.id, "resolved").to_json()

    # -- operations ---------------------------------------------------------------------

    async def admin_checkpoint(self, params: p.NoParams) -> dict[str, Any]:
        return await self.service.maintain()

    async def admin_backup(self, params: p.Backup) -> dict[str, Any]:
        path = os.path.abspath(os.path.expanduser(params.path))
        size = await asyncio.to_thread(self.service.store.db.backup, path)
        return {"path": path, "bytes": size}


def _validated_all(documents: list[dict[str, Any]]) -> list[Automation]:
    """Every document as an automation, or ``ValidationFailed`` listing every problem
    of every document (at ``automations.N.field``)."""
    automations: list[Automation] = []
    details: list[dict[str, Any]] = []
    for index, document in enumerate(documents):
        try:
            automations.append(validated_automation(document))
        except ValidationError as exc:
            details.extend(
                {"loc": ["automations", index, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False)
            )
    if details:
        raise ValidationFailed.from_details(details)
    return automations
