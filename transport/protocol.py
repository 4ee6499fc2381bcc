"""The RPC contract, written once: every method's name, params model and result type.

``METHODS`` maps each ``noun.verb`` name to a ``Method``: the server
(``transport/api.py``) validates params with ``params`` and dumps what its
handler returns with ``result``; the clients (``transport/client.py``) build
params with the same models and read replies with the same adapters. A test
checks that every method here is served and is on both clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from marmot.engine.models.automations import Automation
from marmot.engine.models.backtest import BacktestJob
from marmot.engine.models.blocks import BlockTypeSlug
from marmot.engine.models.events import Event
from marmot.engine.models.explain import Explanation
from marmot.engine.models.history import History, WhyReport
from marmot.engine.models.lint import LintReport
from marmot.engine.models.verdicts import TestReport

__all__ = [
    "METHODS",
    "AutomationView",
    "Emitted",
    "EventPage",
    "EventView",
    "Method",
    "Params",
]

# SQLite integers are 64-bit signed; larger numbers cannot be bound.
_SQL_INT_MAX = 2**63 - 1
# An events.filter cursor: the sequence number and the occurred time (µs) of the
# last event of a page, "<seq>.<occurred_us>".
CURSOR_PATTERN = r"^[0-9]{1,19}\.-?[0-9]{1,19}$"

P = TypeVar("P", bound="Params")
R = TypeVar("R")


class Params(BaseModel):
    """A method's params: unknown keys are refused, so a typo is an error."""

    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    """No params."""


class ById(Params):
    id: UUID


class ByName(Params):
    name: str


class ExplainAutomation(Params):
    id: UUID
    # Buckets per trigger in the reply (``buckets_total`` says how many there are).
    limit: int = Field(default=1000, ge=1, le=10_000)
    offset: int = Field(default=0, ge=0, le=_SQL_INT_MAX)


class CreateAutomation(Params):
    automation: dict[str, Any]


class CreateAutomations(Params):
    # A file's worth at a time: the CLI sends longer lists in parts.
    automations: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class UpdateAutomation(Params):
    id: UUID
    automation: dict[str, Any]


class AutomationFilter(Params):
    name_prefix: str | None = None
    enabled: bool | None = None
    tags: list[str] = Field(default_factory=list, max_length=1000)
    limit: int | None = Field(default=None, ge=1, le=_SQL_INT_MAX)
    offset: int = Field(default=0, ge=0, le=_SQL_INT_MAX)


class Emit(Params):
    events: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)


class EventFilter(Params):
    """Events from the log, newest first by ``occurred`` (by arrival with
    ``by_seq``), or those after ``after_seq`` by arrival; every filter applies.

    A reply holds at most ``rpc.page_bytes`` of events (and one at least). With
    ``page`` (or a ``cursor``) the result is an ``EventPage``: at most ``limit``
    events, with the cursor of the next page. Without, it is the list of the
    ``limit`` events, refused (``limit_exceeded``) when they are over that size.
    """

    names: list[str] = Field(default_factory=list, max_length=1000)
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=100, ge=1, le=10_000)
    descending: bool = True
    by_seq: bool = False
    after_seq: int | None = Field(default=None, ge=0, le=_SQL_INT_MAX)
    page: bool = False
    # An EventPage's ``next``, as it was: the page read starts after it.
    cursor: str | None = Field(default=None, pattern=CURSOR_PATTERN)

    @field_validator("cursor")
    @classmethod
    def _cursor_in_range(cls, cursor: str | None) -> str | None:
        if cursor is not None and any(abs(int(n)) > _SQL_INT_MAX for n in cursor.split(".")):
            raise ValueError("not a cursor events.filter returned")
        return cursor

    @property
    def is_paged(self) -> bool:
        """Whether the reply is an ``EventPage``."""
        return self.page or self.cursor is not None


class CreateBlock(Params):
    block: dict[str, Any]


class BlockByName(Params):
    block_type_slug: BlockTypeSlug
    name: str


class BlockFilter(Params):
    block_type_slug: BlockTypeSlug | None = None


class IncidentFilter(Params):
    automation_id: UUID | None = None
    status: Literal["open", "resolved"] | None = None
    limit: int = Field(default=100, ge=1, le=10_000)


class CreateWebhook(Params):
    webhook: dict[str, Any]


class UpdateWebhook(Params):
    # Only the fields given change; the slug is never the user's to set.
    id: UUID
    name: str | None = None
    description: str | None = None
    enabled: bool | None = None
    template: str | dict[str, Any] | None = None


class WebhookFilter(Params):
    name_prefix: str | None = None
    enabled: bool | None = None


class TestAutomation(Params):
    """A dry run: the stored automation ``id`` (on a copy of its live state) or an
    ``automation`` document (on a fresh state, or the live one when it is stored
    with the same trigger), against ``events`` given here, the logged events
    ``event_ids``, or the ``last`` logged events (named ``event_name``, a glob)."""

    id: UUID | None = None
    automation: dict[str, Any] | None = None
    events: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    event_ids: list[UUID] = Field(default_factory=list, max_length=1000)
    last: int | None = Field(default=None, ge=1, le=1000)
    event_name: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of_each(self) -> TestAutomation:
        if (self.id is None) == (self.automation is None):
            raise ValueError("give either id (a stored automation) or automation (a document)")
        sources = [bool(self.events), bool(self.event_ids), self.last is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of events, event_ids or last")
        if self.event_name is not None and self.last is None:
            raise ValueError("event_name filters the last events: give last too")
        return self


class AutomationHistory(Params):
    id: UUID
    since: datetime | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    # A History's ``next``, as it was: the page read starts after it.
    cursor: str | None = Field(default=None, pattern=CURSOR_PATTERN)

    @field_validator("cursor")
    @classmethod
    def _cursor_in_range(cls, cursor: str | None) -> str | None:
        if cursor is not None and any(abs(int(n)) > _SQL_INT_MAX for n in cursor.split(".")):
            raise ValueError("not a cursor automations.history returned")
        return cursor


class StartBacktest(Params):
    """Run ``automations`` over the log's events that occurred in ``[since, until]``
    (until: now); ``compare``: a stored automation to line the firings up against."""

    automations: list[dict[str, Any]] = Field(min_length=1, max_length=100)
    since: datetime | None = None
    until: datetime | None = None
    compare: UUID | None = None


class LintAutomations(Params):
    automations: list[dict[str, Any]] = Field(min_length=1, max_length=100)


class WhyEvent(Params):
    id: UUID
    event_id: UUID


class Backup(Params):
    path: str = Field(min_length=1)


# -- results ---------------------------------------------------------------------------


class AutomationView(Automation):
    """An automation as the daemon stores it: the document plus its bookkeeping."""

    created: datetime
    updated: datetime
    version: int

    @model_validator(mode="before")
    @classmethod
    def _drop_server_fields(cls, data: Any) -> Any:
        # The bookkeeping is this view's own (an Automation drops Prefect's).
        return data

    def automation(self) -> Automation:
        """The document alone."""
        return Automation.model_validate(self.model_dump(exclude={"created", "updated", "version"}))


class AutomationSummary(BaseModel):
    """One line of a listing: what ``marmot automation ls`` shows of an automation,
    without its trigger and actions in full (a fleet's listing stays small)."""

    id: UUID
    name: str
    enabled: bool
    trigger: str  # the trigger's type
    actions: list[str]  # each action's type
    tags: list[str]
    updated: datetime
    version: int


class EventView(Event):
    """An event from the log, with its sequence number."""

    seq: int


class EventPage(BaseModel):
    """A page of ``events.filter``: its events, and the cursor that reads on past
    the last one (None: no more events match)."""

    events: list[EventView]
    next: str | None = None


class Emitted(BaseModel):
    """Events accepted: their sequence numbers in the log and their ids, in order."""

    seqs: list[int]
    ids: list[UUID]


class Deleted(BaseModel):
    """What was deleted."""

    deleted: UUID


Document = dict[str, Any]
"""A JSON document of its own shape (blocks with secrets masked, webhooks with their URL,
incidents, status): the domain object's own ``to_json``/``public_view`` writes it."""


@dataclass(frozen=True, slots=True)
class Method(Generic[P, R]):
    """One RPC method: its name, its params model and how its result travels."""

    name: str
    params: type[P]
    result: TypeAdapter[R]
    # The method of Client, AsyncClient and client.Requests that calls it.
    client_name: str

    def dump(self, value: R) -> Any:
        """A handler's result as JSON-safe values, for the reply."""
        return self.result.dump_python(value, mode="json")

    def load(self, value: Any) -> R:
        """A reply's result as its type."""
        return self.result.validate_python(value)


def _method(name: str, params: type[P], result: Any, client_name: str) -> Method[P, Any]:
    return Method(name, params, TypeAdapter(result), client_name)


_TABLE = (
    _method("health", NoParams, Document, "health"),
    _method("status", NoParams, Document, "status"),
    _method("automations.create", CreateAutomation, AutomationView, "create_automation"),
    _method(
        "automations.create_many", CreateAutomations, list[AutomationView], "create_automations"
    ),
    _method("automations.read", ById, AutomationView, "read_automation"),
    _method("automations.read_by_name", ByName, AutomationView, "read_automation_by_name"),
    _method("automations.filter", AutomationFilter, list[AutomationView], "list_automations"),
    _method(
        "automations.summaries",
        AutomationFilter,
        list[AutomationSummary],
        "list_automation_summaries",
    ),
    _method("automations.update", UpdateAutomation, AutomationView, "update_automation"),
    _method("automations.delete", ById, Deleted, "delete_automation"),
    _method("automations.pause", ById, AutomationView, "pause_automation"),
    _method("automations.resume", ById, AutomationView, "resume_automation"),
    _method("automations.explain", ExplainAutomation, Explanation, "explain"),
    _method("automations.test", TestAutomation, TestReport, "test_automation"),
    _method("automations.history", AutomationHistory, History, "automation_history"),
    _method("automations.why", WhyEvent, WhyReport, "why"),
    _method("automations.lint", LintAutomations, list[LintReport], "lint_automations"),
    _method("backtests.start", StartBacktest, BacktestJob, "start_backtest"),
    _method("backtests.read", ById, BacktestJob, "read_backtest"),
    _method("events.emit", Emit, Emitted, "emit"),
    _method("events.filter", EventFilter, list[EventView] | EventPage, "filter_events"),
    _method("blocks.create", CreateBlock, Document, "create_block"),
    _method("blocks.read", ById, Document, "read_block"),
    _method("blocks.read_by_name", BlockByName, Document, "read_block_by_name"),
    _method("blocks.filter", BlockFilter, list[Document], "list_blocks"),
    _method("blocks.delete", ById, Deleted, "delete_block"),
    _method("webhooks.create", CreateWebhook, Document, "create_webhook"),
    _method("webhooks.read", ById, Document, "read_webhook"),
    _method("webhooks.read_by_name", ByName, Document, "read_webhook_by_name"),
    _method("webhooks.filter", WebhookFilter, list[Document], "list_webhooks"),
    _method("webhooks.update", UpdateWebhook, Document, "update_webhook"),
    _method("webhooks.rotate", ById, Document, "rotate_webhook"),
    _method("webhooks.delete", ById, Deleted, "delete_webhook"),
    _method("incidents.read", ById, Document, "read_incident"),
    _method("incidents.filter", IncidentFilter, list[Document], "list_incidents"),
    _method("incidents.resolve", ById, Document, "resolve_incident"),
    _method("admin.checkpoint", NoParams, Document, "checkpoint"),
    _method("admin.backup", Backup, Document, "backup"),
)

METHODS: dict[str, Method[Any, Any]] = {method.name: method for method in _TABLE}
"""Every RPC method by name."""
