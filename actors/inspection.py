"""Why did it (not) fire: dry runs, history, the verdict on a logged event, lint.

``Inspector`` answers ``automations.test``, ``.history``, ``.why`` and ``.lint`` over a
``Service``. None of them changes anything: a dry run evaluates on a copy of
the automation actor's live state (or a fresh one), history reads the event
and action logs, and ``why`` rebuilds the state at the time from the
checkpoint and the log in a Ray task, off the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from marmot.actors.automation import fingerprint
from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.service import Service
from marmot.actors.store import Store
from marmot.actors.store.events import EventLog, LogPosition
from marmot.actors.wire import unpack
from marmot.engine.clock import Clock
from marmot.engine.errors import NotFound
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.models.history import (
    ActionOutcome,
    FiringRecord,
    History,
    IncidentRecord,
    WhyReport,
    WhyStatus,
)
from marmot.engine.models.lint import LintReport, LogFacts
from marmot.engine.models.verdicts import TestReport
from marmot.engine.templates.checks import validated_automation
from marmot.engine.timestamps import from_us, to_us
from marmot.engine.triggers.lint import lint_automation, proactive_floor
from marmot.engine.triggers.verdicts import DryRun
from marmot.engine.triggers.why import explain_event

log = logging.getLogger(__name__)

__all__ = ["DryRunInput", "Inspector", "log_facts", "why_in_log"]

_FIRING_NAMES = ("prefect.automation.triggered", "prefect.automation.resolved")
_ACTION_NAMES = ("prefect.automation.action.*",)
# Action events read for one page of firings, at most.
_ACTIONS_PER_PAGE = 10_000
_LOG_PAGE = 5000
# Lint: recent events whose labels are looked at, and values kept per label.
LINT_SAMPLE = 20_000
_VALUES_KEPT = 5000


@dataclass(frozen=True, slots=True)
class DryRunInput:
    """Events for a dry run: from a file (``seq`` None), or from the log."""

    event: Event
    seq: int | None = None


class Inspector:
    """Dry runs, history and ``why`` over a running daemon's ``Service``."""

    def __init__(self, service: Service, clock: Clock = SYSTEM_CLOCK) -> None:
        """``clock``: when events from a file arrive (as the daemon would stamp them)."""
        self.service = service
        self.store = service.store
        self._clock = clock

    # -- automations.test ---------------------------------------------------------------

    async def test(
        self, automation: Automation, inputs: Sequence[DryRunInput], *, use_live: bool
    ) -> TestReport:
        """Evaluate ``inputs`` in order on a copy of the automation's live state (when
        ``use_live`` and it is running) or on a fresh one; nothing changes, no action runs.

        Events from a file are processed now; the daemon would drop one whose id it
        has logged (a duplicate). Events from the log are processed at their
        ``received`` time.
        """
        state = None
        if use_live and automation.enabled:
            state = await self.service.placement.state(str(automation.id))
        config = self.service.config
        now_us = to_us(self._clock.now())
        events = self.store.events

        def run() -> TestReport:
            files = [i.event.id for i in inputs if i.seq is None]
            logged = events.known_ids(files)
            dry = DryRun(
                automation,
                state,
                resolve=config.resolved_states,
                max_keys=config.limits.max_buckets_per_trigger,
                is_known=lambda event_id: bool(events.known_ids([event_id])),
            )
            verdicts = [
                dry.test(
                    i.event,
                    now_us if i.seq is None else None,
                    seq=i.seq,
                    is_duplicate=i.seq is None and i.event.id in logged,
                )
                for i in inputs
            ]
            return TestReport(
                automation_id=automation.id,
                name=automation.name,
                state="live" if state is not None else "empty",
                events=verdicts,
            )

        return await asyncio.to_thread(run)

    def logged_events(
        self, event_ids: Sequence[UUID] = (), last: int | None = None, name: str | None = None
    ) -> list[DryRunInput]:
        """Events from the log for a dry run, in arrival order: these ids (raises
        ``NotFound`` naming any not in the log), or the ``last`` ones (named ``name``)."""
        events = self.store.events
        if event_ids:
            found = events.find_ids(list(event_ids))
            missing = set(event_ids) - {event.id for _, event in found}
            if missing:
                raise NotFound(
                    "not in the event log (never received, or past data.event_retention_days): "
                    + ", ".join(sorted(str(m) for m in missing)),
                    details=[str(m) for m in sorted(missing, key=str)],
                )
            return [DryRunInput(event, seq) for seq, event in found]
        rows = events.filter(names=[name] if name else [], limit=last or 1, by_seq=True)
        return [DryRunInput(event, seq) for seq, event in reversed(rows)]

    # -- automations.history ------------------------------------------------------------

    async def history(
        self,
        automation_id: UUID,
        *,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> History:
        """The automation's firings and resolutions, newest first (a page of ``limit``
        from ``cursor``), with each action's outcome and the incidents they opened."""
        stored = self.store.automations.read(automation_id)
        return await asyncio.to_thread(
            _history, self.store, stored.automation, since, limit, cursor
        )

    # -- automations.why ----------------------------------------------------------------

    # -- automations.lint ---------------------------------------------------------------

    async def lint(self, documents: Sequence[dict[str, Any]]) -> list[LintReport]:
        """Lint automation documents (raises ``ValidationFailed`` for one that does not
        load), with the checks against the log's events and the daemon's settings."""
        automations = [validated_automation(d) for d in documents]
        config = self.service.config
        days = config.data.event_retention_days
        facts = await asyncio.to_thread(log_facts, self.store, days)
        return [
            LintReport(
                automation=a.name,
                findings=proactive_floor(d)
                + lint_automation(
                    a,
                    facts=facts,
                    resolved_states=config.resolved_states,
                    has_orchestrator=config.orchestrator.api_url is not None,
                ),
                log_checked=True,
                log_days=days,
            )
            for a, d in zip(automations, documents, strict=True)
        ]

    async def why(self, automation_id: UUID, event_id: UUID) -> WhyReport:
        """What the automation did with the logged event ``event_id`` at the time,
        and what the bucket it went to did afterwards (see ``explain_event``)."""
        stored = self.store.automations.read(automation_id)
        found = self.store.events.find_ids([event_id])
        if not found:
            raise _not_in_log(event_id)
        seq, event = found[0]
        if any(held == event_id for held, _, _ in self.store.followers.all()):
            return _held(stored.automation, event, seq)
        config = self.service.config
        return await self.service.runtime.offload(
            why_in_log,
            str(self.store.path),
            stored.automation.model_dump_json(),
            to_us(stored.updated),
            event_id,
            config.resolved_states,
            config.limits.max_buckets_per_trigger,
        )


def log_facts(store: Store, days: float, sample: int = LINT_SAMPLE) -> LogFacts:
    """What the event log has seen, for lint: every event name, and the labels and
    label values of its last ``sample`` events (at most ``_VALUES_KEPT`` values a label)."""
    with store.db.lock:
        names = frozenset(r[0] for r in store.db.conn.execute("SELECT DISTINCT event FROM events"))
    labels: dict[str, set[str]] = {}
    values: dict[str, set[str]] = {}
    related_values: dict[str, set[str]] = {}
    for _, event in store.events.filter(limit=sample, by_seq=True):
        carried = labels.setdefault(event.event, set())
        carried.update(event.resource)
        _keep_values(values, event.resource)
        for related in event.related:
            role = related.get("prefect.resource.role", "")
            carried.update(f"related:{role}:{label}" for label in related)
            _keep_values(related_values, related)
    return LogFacts(
        names=names,
        labels_by_name={n: frozenset(v) for n, v in labels.items()},
        values_by_label={k: frozenset(v) for k, v in values.items()},
        related_values_by_label={k: frozenset(v) for k, v in related_values.items()},
        days=days,
    )


def _keep_values(kept: dict[str, set[str]], labels: dict[str, str]) -> None:
    for label, value in labels.items():
        seen = kept.setdefault(label, set())
        if len(seen) < _VALUES_KEPT:
            seen.add(value)


def why_in_log(
    store_path: str,
    document: str,
    updated_us: int,
    event_id: UUID,
    resolve: bool,
    max_keys: int | None,
) -> WhyReport:
    """``Inspector.why``'s work, run in a Ray task: opens the store itself.

    The state before the event comes from the automation's checkpoint when it
    was taken before the event, else from the start of its current version
    (``updated_us``; an update resets the state, SEMANTICS §5).
    """
    automation = Automation.model_validate_json(document)
    with Store.open(store_path) as store:
        events = store.events
        found = events.find_ids([event_id])
        if not found:
            raise _not_in_log(event_id)
        seq = found[0][0]
        since = from_us(updated_us)
        start = events.first_seq_since(since)
        if seq <= start:
            return _before_version(automation, event_id, seq, since)
        state: dict[str, Any] | None = None
        saved = store.checkpoints.load(str(automation.id))
        if saved is not None and start <= saved[0] < seq:
            checkpoint = unpack(saved[1])
            if checkpoint.get("fingerprint") == fingerprint(document):
                start, state = saved[0], checkpoint["state"]
        return explain_event(
            automation,
            _read_from(events, start),
            event_id,
            state=state,
            since=since,
            resolve=resolve,
            max_keys=max_keys,
        )


def _not_in_log(event_id: UUID) -> NotFound:
    return NotFound(
        f"event {event_id} is not in the event log "
        "(never received, or past data.event_retention_days)",
        details=str(event_id),
    )


def _read_from(events: EventLog, seq: int) -> Iterator[tuple[int, Event]]:
    while page := events.read_after(seq, _LOG_PAGE):
        yield from page
        seq = page[-1][0]


def _held(automation: Automation, event: Event, seq: int) -> WhyReport:
    return WhyReport(
        automation_id=automation.id,
        name=automation.name,
        event_id=event.id,
        seq=seq,
        status=WhyStatus.not_evaluated,
        summary=(
            f"not evaluated yet: held for `follows`, waiting for event {event.follows} "
            "(evaluated when it arrives, or once it is given up on)"
        ),
        verdict=None,
        aftermath=[],
        replayed_events=0,
        since=None,
    )


def _before_version(automation: Automation, event_id: UUID, seq: int, since: datetime) -> WhyReport:
    return WhyReport(
        automation_id=automation.id,
        name=automation.name,
        event_id=event_id,
        seq=seq,
        status=WhyStatus.not_evaluated,
        summary=(
            f"received before the automation's current version ({since.isoformat()}): "
            "its state was reset since, so this event no longer counts"
        ),
        verdict=None,
        aftermath=[],
        replayed_events=0,
        since=since,
    )


def _history(
    store: Store,
    automation: Automation,
    since: datetime | None,
    limit: int,
    cursor: str | None,
) -> History:
    events = store.events
    resource = f"prefect.automation.{automation.id}"
    after = None
    if cursor is not None:
        last_seq, last_us = cursor.split(".")
        after = LogPosition(int(last_seq), int(last_us))
    page = events.page(
        names=_FIRING_NAMES, resource_id=resource, since=since, limit=limit, after=after
    )
    firings = page.rows
    actions: dict[UUID, list[Event]] = {}
    firing_ids: dict[UUID, UUID] = {}
    if firings:
        oldest = min(event.occurred for _, event in firings)
        for _, action in events.filter(
            names=_ACTION_NAMES,
            resource_id=resource,
            since=oldest,
            limit=_ACTIONS_PER_PAGE,
            descending=False,
        ):
            triggered = _related_id(action, "automation-triggered-event")
            if triggered is None:
                continue
            actions.setdefault(triggered, []).append(action)
            invocation = action.payload.get("invocation")
            if isinstance(invocation, str):
                firing_ids[triggered] = UUID(invocation)
    keys = [
        f"{firing_ids[e.id]}:{a.payload.get('action_index')}"
        for _, e in firings
        if e.id in firing_ids
        for a in actions.get(e.id, [])
    ]
    records = {r.key: r for r in store.actions.records(sorted(set(keys)))}
    records_out = [
        _firing_record(event, firing_ids.get(event.id), actions.get(event.id, []), records)
        for _, event in firings
    ]
    incidents = [
        IncidentRecord(
            id=i.id,
            firing_id=i.firing_id,
            title=i.title,
            severity=i.severity,
            status=i.status,
            created=i.created,
        )
        for i in store.incidents.list(automation_id=automation.id, limit=limit)
        if since is None or i.created >= since
    ]
    next_cursor = None
    if page.has_more and firings:
        seq, last = firings[-1]
        next_cursor = f"{seq}.{to_us(last.occurred)}"
    return History(
        automation_id=automation.id,
        name=automation.name,
        firings=records_out,
        incidents=incidents,
        next=next_cursor,
    )


def _related_id(event: Event, role: str) -> UUID | None:
    for related in event.related:
        if related.get("prefect.resource.role") == role:
            _, _, value = related.get("prefect.resource.id", "").rpartition(".")
            try:
                return UUID(value)
            except ValueError:
                return None
    return None


def _firing_record(
    event: Event, firing_id: UUID | None, actions: list[Event], records: dict[str, Any]
) -> FiringRecord:
    source = event.payload.get("triggering_event")
    labels = event.payload.get("triggering_labels") or {}
    by_index: dict[int, list[Event]] = {}
    for action in actions:
        index = action.payload.get("action_index")
        if isinstance(index, int):
            by_index.setdefault(index, []).append(action)
    outcomes = [
        _action_outcome(index, by_index[index], records.get(f"{firing_id}:{index}"))
        for index in sorted(by_index)
    ]
    return FiringRecord(
        state="Resolved" if event.event.endswith(".resolved") else "Triggered",
        fired_at=event.occurred,
        event_id=event.id,
        firing_id=firing_id,
        labels={str(k): str(v) for k, v in dict(labels).items()},
        triggering_event_id=_related_id(event, "triggering-event"),
        triggering_event=source.get("event") if isinstance(source, dict) else None,
        actions=outcomes,
    )


def _action_outcome(index: int, events: list[Event], record: Any) -> ActionOutcome:
    started = next((e.occurred for e in events if e.event.endswith(".triggered")), None)
    done = next((e for e in events if not e.event.endswith(".triggered")), None)
    status = done.event.rpartition(".")[2] if done is not None else "claimed"
    if record is not None:
        status = record.status
        started = started or record.created
    payload = done.payload if done is not None else {}
    detail = str(payload.get("reason") or payload.get("result") or "")
    if not detail and record is not None:
        detail = record.detail
    finished = done.occurred if done is not None else None
    if finished is None and record is not None and record.status != "claimed":
        finished = record.updated
    attempts = payload.get("attempts")
    action_type = next((e.payload.get("action_type") for e in events), None)
    return ActionOutcome(
        index=index,
        type=str(action_type) if action_type is not None else None,
        status=status,
        detail=detail,
        attempts=attempts if isinstance(attempts, int) else None,
        started=started,
        finished=finished,
        duration_s=(finished - started).total_seconds() if finished and started else None,
    )
