"""Backtests on the daemon's own event log, run in a Ray task with progress.

``backtest_in_log`` is the task's body: it reads the log straight from the
store file (its own connection, so the daemon's lock is never held) in
arrival order and feeds ``engine.replay.Replay`` at each event's arrival
time, as ``marmot replay`` does; it yields progress as it goes and the
report last. Events whose name no automation is interested in are not
rebuilt whole: they move the clocks and the causal ordering only, which is
all they do in a replay. ``Backtests`` keeps the daemon's jobs and their
progress, for ``backtests.start`` / ``backtests.read``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from marmot.actors.runtime import RayRuntime
from marmot.actors.store import Store
from marmot.actors.store.database import Database
from marmot.actors.store.events import LogPosition
from marmot.actors.tasks import TaskGroup
from marmot.actors.wire import event_from_wire, unpack
from marmot.engine.clock import Clock
from marmot.engine.errors import NotFound
from marmot.engine.models.automations import Automation
from marmot.engine.models.backtest import (
    BacktestFiring,
    BacktestJob,
    BacktestReport,
    Comparison,
    KeyCount,
)
from marmot.engine.replay import Replay, ReplayFiring
from marmot.engine.timestamps import from_us, to_us

log = logging.getLogger(__name__)

__all__ = ["Backtests", "Progress", "backtest_in_log"]

# Rows fetched from SQLite at a time, and how often progress is reported.
_FETCH_ROWS = 5000
_PROGRESS_EVERY_S = 0.5
# Firings listed in a report (all are counted per key); jobs kept for reading.
FIRINGS_LISTED = 10_000
_JOBS_KEPT = 32

Progress = tuple[int, int]
"""``(events done, events in range)`` while a backtest runs."""


def _range_sql(since_us: int | None, until_us: int) -> tuple[str, list[int]]:
    # `+occurred`: not through the occurred index. The rows are read in `seq`
    # (rowid) order, and a scan in that order beats an index lookup followed
    # by a sort of every row in the range (~8 us a row, measured).
    where, params = "+occurred <= ?", [until_us]
    if since_us is not None:
        where += " AND +occurred >= ?"
        params.append(since_us)
    return where, params


def _log_rows(db: Database, since_us: int | None, until_us: int) -> Iterator[bytes]:
    """The packed bodies of the log's events in the range, in arrival order."""
    where, params = _range_sql(since_us, until_us)
    cursor = db.conn.execute(f"SELECT body FROM events WHERE {where} ORDER BY seq", params)
    try:
        while rows := cursor.fetchmany(_FETCH_ROWS):
            for (body,) in rows:
                yield body
    finally:
        cursor.close()


def backtest_in_log(
    store_path: str,
    documents: list[str],
    since_us: int | None,
    until_us: int,
    compare_id: str | None,
    resolve: bool,
) -> Iterator[Progress | BacktestReport]:
    """Replay ``documents`` (automation JSON) over the log's events that occurred in
    ``[since_us, until_us]``, at each event's arrival, with proactive evaluation at
    each deadline (``tick=0``, as the daemon runs). Yields progress, then the report;
    ``compare_id``: a stored automation whose logged firings are lined up against
    the first automation's."""
    automations = [Automation.model_validate_json(d) for d in documents]
    started = time.monotonic()
    with Store.open(store_path) as store:
        db = store.db
        where, params = _range_sql(since_us, until_us)
        total = int(
            db.conn.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()[0]
        )
        yield (0, total)
        first = db.conn.execute(
            f"SELECT min(coalesce(received, occurred)) FROM events WHERE {where}", params
        ).fetchone()[0]
        start_us = since_us if since_us is not None else (first if first is not None else until_us)
        replay = Replay(
            automations, start=from_us(min(start_us, until_us)), tick=0, resolve=resolve
        )
        done, reported = 0, time.monotonic()
        for body in _log_rows(db, since_us, until_us):
            replay.feed(event_from_wire(unpack(body)))
            done += 1
            if not done % 4096 and time.monotonic() - reported >= _PROGRESS_EVERY_S:
                reported = time.monotonic()
                yield (done, total)
        replay.run_until_us(until_us)
        comparison = None
        if compare_id is not None:
            comparison = _compare(store, compare_id, since_us, until_us, replay.sorted_firings())
    elapsed = time.monotonic() - started
    yield _report(replay.sorted_firings(), done, since_us, until_us, elapsed, comparison)


def _firing(fired: ReplayFiring) -> BacktestFiring:
    line = fired.line()
    return BacktestFiring.model_validate(line)


def _key(labels: dict[str, str], event_id: UUID | None) -> tuple[str, str]:
    return json.dumps(labels, sort_keys=True), str(event_id)


def _report(
    fired: list[ReplayFiring],
    events: int,
    since_us: int | None,
    until_us: int,
    elapsed: float,
    comparison: Comparison | None,
) -> BacktestReport:
    per_key: Counter[str] = Counter(
        json.dumps(dict(f.firing.labels), sort_keys=True) for f in fired
    )
    return BacktestReport(
        events=events,
        since=from_us(since_us) if since_us is not None else None,
        until=from_us(until_us),
        elapsed_s=elapsed,
        events_per_s=events / elapsed if elapsed > 0 else 0.0,
        firings_total=len(fired),
        firings=[_firing(f) for f in fired[:FIRINGS_LISTED]],
        per_key=[KeyCount(labels=json.loads(k), firings=n) for k, n in per_key.most_common()],
        comparison=comparison,
    )


def _compare(
    store: Store,
    automation_id: str,
    since_us: int | None,
    until_us: int,
    fired: list[ReplayFiring],
) -> Comparison:
    stored = store.automations.read(UUID(automation_id))
    live: list[BacktestFiring] = []
    after: LogPosition | None = None
    while True:
        page = store.events.page(
            names=["prefect.automation.triggered"],
            resource_id=f"prefect.automation.{automation_id}",
            since=from_us(since_us) if since_us is not None else None,
            until=from_us(until_us),
            limit=_FETCH_ROWS,
            descending=False,
            by_seq=True,
            after=after,
        )
        for _, event in page.rows:
            source = event.payload.get("triggering_event")
            labels = event.payload.get("triggering_labels") or {}
            live.append(
                BacktestFiring(
                    automation=stored.automation.name,
                    state="Triggered",
                    labels={str(k): str(v) for k, v in dict(labels).items()},
                    event_id=UUID(source["id"]) if isinstance(source, dict) else None,
                    fired_at=event.occurred,
                )
            )
        if not page.has_more or not page.rows:
            break
        after = LogPosition.of(*page.rows[-1])
    ours = [_firing(f) for f in fired if f.firing.state.value == "Triggered"]
    theirs_keys = Counter(_key(f.labels, f.event_id) for f in live)
    ours_keys = Counter(_key(f.labels, f.event_id) for f in ours)
    matched = sum((theirs_keys & ours_keys).values())
    only_ours, only_theirs = ours_keys - theirs_keys, theirs_keys - ours_keys
    return Comparison(
        automation=stored.automation.name,
        automation_id=stored.automation.id,
        live_firings=len(live),
        matched=matched,
        only_backtest=_take(ours, only_ours),
        only_live=_take(live, only_theirs),
    )


def _take(firings: list[BacktestFiring], wanted: Counter[tuple[str, str]]) -> list[BacktestFiring]:
    left = Counter(wanted)
    taken = []
    for firing in firings:
        key = _key(firing.labels, firing.event_id)
        if left[key] > 0:
            left[key] -= 1
            taken.append(firing)
    return taken[:FIRINGS_LISTED]


class Backtests:
    """The daemon's backtest jobs: started in Ray tasks, read while they run."""

    def __init__(self, runtime: RayRuntime, store: Store, tasks: TaskGroup, clock: Clock) -> None:
        self._runtime = runtime
        self._store = store
        self._tasks = tasks
        self._clock = clock
        self._jobs: dict[UUID, BacktestJob] = {}

    def start(
        self,
        automations: Sequence[Automation],
        *,
        since: datetime | None,
        until: datetime | None,
        compare: UUID | None,
        resolve: bool,
    ) -> BacktestJob:
        """Start a backtest of ``automations`` over the log; returns its job at once."""
        if compare is not None:
            self._store.automations.read(compare)  # NotFound before anything starts
        now = self._clock.now()
        job = BacktestJob(
            id=uuid4(), state="running", events_done=0, events_total=None, started=now
        )
        self._jobs[job.id] = job
        while len(self._jobs) > _JOBS_KEPT:
            del self._jobs[next(iter(self._jobs))]
        stream = self._runtime.offload_stream(
            backtest_in_log,
            str(self._store.path),
            [a.model_dump_json() for a in automations],
            to_us(since) if since is not None else None,
            to_us(until if until is not None else now),
            str(compare) if compare is not None else None,
            resolve,
        )
        self._tasks.spawn(self._follow(job.id, stream))
        return job

    async def _follow(self, job_id: UUID, stream: Any) -> None:
        job = self._jobs[job_id]
        try:
            async for item in stream:
                if isinstance(item, BacktestReport):
                    job.report, job.state = item, "done"
                    job.events_done = item.events
                else:
                    job.events_done, job.events_total = item
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("backtest failed: %s", exc, extra={"backtest": str(job_id)})
            job.state, job.error = "failed", str(exc)
        if job.state == "running":
            job.state, job.error = "failed", "the backtest ended without a report"

    def read(self, job_id: UUID) -> BacktestJob:
        """A job as it stands (raises ``NotFound`` for one unknown or forgotten)."""
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no backtest {job_id} (finished ones are kept for a while)")
        return job.model_copy()
