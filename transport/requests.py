"""Every call of the RPC API as a ``Request``, built once for both clients.

``Requests`` has one builder per method of ``protocol.METHODS``: it names the
method, checks its params against the method's model before they travel,
and says how to read the reply into what the clients return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.models.automations import Automation
from marmot.engine.models.backtest import BacktestJob
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.models.events import Event
from marmot.engine.models.explain import Explanation
from marmot.engine.models.history import History, WhyReport
from marmot.engine.models.lint import LintReport
from marmot.engine.models.verdicts import TestReport
from marmot.transport.event_ids import new_event_id
from marmot.transport.protocol import METHODS, AutomationSummary, AutomationView, Method

__all__ = ["AutomationLike", "EventLike", "EventPages", "Request", "Requests", "is_serving"]

T = TypeVar("T")

AutomationLike = Automation | Mapping[str, Any]
EventLike = Event | Mapping[str, Any]


def _automation_doc(automation: AutomationLike) -> dict[str, Any]:
    if isinstance(automation, Automation):
        return automation.model_dump(mode="json")
    return dict(automation)


def _event_doc(event: EventLike) -> dict[str, Any]:
    if isinstance(event, Event):
        return event.model_dump(mode="json", exclude={"received"})
    # As Prefect's clients: an event without an id or a time gets them when sent.
    document = dict(event)
    document.setdefault("id", str(new_event_id()))
    document.setdefault("occurred", SYSTEM_CLOCK.now().isoformat())
    return document


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


def _filtered(
    method_name: str,
    name_prefix: str | None,
    enabled: bool | None,
    tags: Sequence[str],
    limit: int | None,
    offset: int | None,
) -> Request[Any]:
    """A listing of automations (full or one line each) with ``AutomationFilter``'s
    filters."""
    return _request(
        method_name,
        _typed(method_name),
        name_prefix=name_prefix,
        enabled=enabled,
        tags=list(tags) or None,
        limit=limit,
        offset=offset,
    )


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


def _automations(result: Any) -> list[Automation]:
    views: list[AutomationView] = METHODS["automations.create_many"].load(result)
    return [view.automation() for view in views]


def _block(result: Any) -> BlockDocument:
    # The server masks secrets: they arrive (and stay) as "********".
    return BlockDocument.model_validate(result)


def _document(result: Any) -> dict[str, Any]:
    return dict(result)


def _documents(result: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in result]


def _nothing(result: Any) -> None:
    return None


EventPage = tuple[list[dict[str, Any]], str | None]
"""A page of events and the cursor of the next one (None: no more events match)."""


def _event_page(result: Any) -> EventPage:
    return [dict(row) for row in result["events"]], result.get("next")


class EventPages:
    """The pages of one ``events.filter`` query, read one after the other.

    The daemon bounds a page by bytes (``rpc.page_bytes``), so a large
    ``limit`` may take several calls: ``request`` is the next one to send (None
    once ``limit`` events are in, or no more match), ``add`` takes its reply,
    and ``events`` are those of the query so far.
    """

    def __init__(self, query: Request[list[dict[str, Any]]]) -> None:
        self.events: list[dict[str, Any]] = []
        self._query = query
        self._limit: int = query.params.get("limit", 100)
        self.request: Request[EventPage] | None = self._page(None)

    def _page(self, cursor: str | None) -> Request[EventPage]:
        params = {**self._query.params, "page": True, "limit": self._limit - len(self.events)}
        if cursor is not None:
            params["cursor"] = cursor
        return Request(self._query.method, params, _event_page)

    def add(self, page: EventPage) -> None:
        """Take a page: the next ``request`` asks for what follows it."""
        events, cursor = page
        self.events += events
        is_done = cursor is None or not events or len(self.events) >= self._limit
        self.request = None if is_done else self._page(cursor)


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
    def create_automations(automations: Sequence[AutomationLike]) -> Request[list[Automation]]:
        return _request(
            "automations.create_many",
            _automations,
            automations=[_automation_doc(a) for a in automations],
        )

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
        return _filtered("automations.filter", name_prefix, enabled, tags, limit, offset)

    @staticmethod
    def list_automation_summaries(
        name_prefix: str | None = None,
        enabled: bool | None = None,
        tags: Sequence[str] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> Request[list[AutomationSummary]]:
        return _filtered("automations.summaries", name_prefix, enabled, tags, limit, offset)

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
    def explain(
        automation_id: UUID | str, limit: int = 1000, offset: int = 0
    ) -> Request[Explanation]:
        return _request(
            "automations.explain",
            _typed("automations.explain"),
            id=str(automation_id),
            limit=limit,
            offset=offset,
        )

    @staticmethod
    def test_automation(
        automation: UUID | str | AutomationLike,
        *,
        events: Iterable[EventLike] = (),
        event_ids: Sequence[UUID | str] = (),
        last: int | None = None,
        event_name: str | None = None,
    ) -> Request[TestReport]:
        target: dict[str, Any] = {}
        if isinstance(automation, UUID | str):
            target["id"] = str(automation)
        else:
            target["automation"] = _automation_doc(automation)
        documents = [_event_doc(e) for e in events]
        return _request(
            "automations.test",
            _typed("automations.test"),
            **target,
            events=documents or None,
            event_ids=[str(i) for i in event_ids] or None,
            last=last,
            event_name=event_name,
        )

    @staticmethod
    def automation_history(
        automation_id: UUID | str,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Request[History]:
        return _request(
            "automations.history",
            _typed("automations.history"),
            id=str(automation_id),
            since=since.isoformat() if since is not None else None,
            limit=limit,
            cursor=cursor,
        )

    @staticmethod
    def why(automation_id: UUID | str, event_id: UUID | str) -> Request[WhyReport]:
        return _request(
            "automations.why",
            _typed("automations.why"),
            id=str(automation_id),
            event_id=str(event_id),
        )

    @staticmethod
    def lint_automations(automations: Sequence[AutomationLike]) -> Request[list[LintReport]]:
        return _request(
            "automations.lint",
            _typed("automations.lint"),
            automations=[_automation_doc(a) for a in automations],
        )

    @staticmethod
    def start_backtest(
        automations: Sequence[AutomationLike],
        since: datetime | None = None,
        until: datetime | None = None,
        compare: UUID | str | None = None,
    ) -> Request[BacktestJob]:
        return _request(
            "backtests.start",
            _typed("backtests.start"),
            automations=[_automation_doc(a) for a in automations],
            since=since.isoformat() if since is not None else None,
            until=until.isoformat() if until is not None else None,
            compare=str(compare) if compare is not None else None,
        )

    @staticmethod
    def read_backtest(job_id: UUID | str) -> Request[BacktestJob]:
        return _request("backtests.read", _typed("backtests.read"), id=str(job_id))

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
