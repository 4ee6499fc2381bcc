"""Metric triggers: a flow-run metric over a lookback window that must breach for a while.

Prefect's server does not evaluate metric triggers, so these rules are
Marmot's (docs/semantics.md, "Metric triggers", says the same for users):

- Inputs. The trigger looks at events named ``prefect.flow-run.<State>``
  whose resource matches ``match`` and whose related resources match
  ``match_related``. A flow run is its resource id. From each run it keeps,
  by the events' ``occurred``: the *scheduled time* (``Scheduled``/``Late``
  events: the payload's ``validated_state.state_details.scheduled_time``, or
  else the event's ``occurred``; a payload time beats a fallback, then the
  later event wins; events after the start are ignored), the *start* (the
  earliest ``Running``) and the *end* and final state (the earliest of
  ``Completed``, ``Failed``, ``Crashed``, ``Cancelled``).
- Samples. Each run gives at most one sample, at its *anchor*: ``duration``
  = end - start, anchored at the end (no start: no sample); ``lateness`` =
  start - scheduled time (at least 0), anchored at the start (no scheduled
  time: no sample); ``successes`` = 100 if the final state is Completed else
  0, anchored at the end. The value at time t is the mean of the samples
  anchored in ``(t - range, t]``; none there means no value.
- Breach. Breaching = a value exists and ``value <operator> threshold``.
  Phases: ``ok`` -> (breaching begins at t0) ``pending`` -> (still breaching
  at t0 + firing_for) ``fired``, firing at exactly t0 + firing_for; pending
  that stops breaching is ``ok`` again. ``fired`` -> (stops breaching at r)
  ``recovering`` -> (breaching again: ``fired``, no new firing; still not
  breaching at r + firing_for) ``ok``, which is a Resolved firing when
  resolution is on and the trigger is the automation's own.
- Time. The trigger's clock only moves forward: evaluating at t means
  t = max(clock, the event's ``occurred`` or ``advance``'s ``as_of``). Before
  that, every change due at or before t is processed in time order, each at
  its own moment: samples leaving the window (anchor + range) and the end of
  a ``firing_for``; at each, samples are dropped first, then the phase is
  decided. Then the event's facts are recorded and the phase decided at t.
  So the same events and ``advance`` calls give the same firings, however
  they are batched; an event older than the clock counts from the clock on.
- Memory. A run is forgotten when its anchor leaves the window, when it ends
  without starting (``lateness``), or, past ``MAX_RUNS`` tracked runs, the
  least recently updated first.
"""

from __future__ import annotations

import heapq
import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from marmot.engine.matching import TriggerMatcher
from marmot.engine.models.events import RESOURCE_ID, Event
from marmot.engine.models.explain import MetricView
from marmot.engine.models.triggers import (
    EventTrigger,
    MetricTrigger,
    MetricTriggerOperator,
    PrefectMetric,
)
from marmot.engine.timestamps import US_PER_S, from_us, span_us, to_us
from marmot.engine.triggers.firing import MetricReading, TriggerState

FLOW_RUN_PREFIX = "prefect.flow-run."
# What the interest index routes to a metric trigger: every flow-run state event.
FLOW_RUN_EVENTS = FLOW_RUN_PREFIX + "*"
SCHEDULED_STATES = frozenset({"Scheduled", "Late"})
RUNNING_STATE = "Running"
TERMINAL_STATES = frozenset({"Completed", "Failed", "Crashed", "Cancelled"})
SUCCESS_STATE = "Completed"
# Runs tracked per trigger, at most: a run that never ends (its end event
# lost) would otherwise be kept forever.
MAX_RUNS = 100_000

_COMPARE: dict[MetricTriggerOperator, Callable[[float, float], bool]] = {
    MetricTriggerOperator.LT: operator.lt,
    MetricTriggerOperator.LTE: operator.le,
    MetricTriggerOperator.GT: operator.gt,
    MetricTriggerOperator.GTE: operator.ge,
}


class Phase(StrEnum):
    """Where a metric trigger is between breaching and firing."""

    ok = "ok"
    pending = "pending"  # breaching, not yet for firing_for
    fired = "fired"
    recovering = "recovering"  # fired, then stopped breaching, not yet for firing_for


class Run:
    """What one flow run has told a metric trigger so far (times in µs)."""

    __slots__ = ("completed", "end", "sample", "scheduled", "scheduled_rank", "seq", "start")

    def __init__(self) -> None:
        self.scheduled: int | None = None
        # (from the payload?, the event's occurred): a higher rank replaces.
        self.scheduled_rank: tuple[bool, int] | None = None
        self.start: int | None = None
        self.end: int | None = None
        self.completed = False
        self.sample: int | None = None  # the value counted in the window's sums
        self.seq = 0  # the run's current expiry entry


@dataclass(frozen=True, slots=True)
class MetricFiring:
    """A metric trigger fired (or, opt-in, resolved): the raw facts."""

    state: TriggerState
    breach_start: int  # when the breach that fired began (events clock)
    at: int  # when it fired or resolved (events clock)
    event: Event | None  # the last event that changed the metric's inputs
    fired_us: int  # the processing time
    reading: MetricReading | None = None  # the value and threshold then


MetricSink = Callable[[MetricFiring], None]


def scheduled_time(event: Event) -> int | None:
    """``payload.validated_state.state_details.scheduled_time`` in µs, if given and valid."""
    details: Any = event.payload.get("validated_state")
    for key in ("state_details", "scheduled_time"):
        details = details.get(key) if isinstance(details, dict) else None
    if not isinstance(details, str):
        return None
    try:
        when = datetime.fromisoformat(details)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return to_us(when)
    except (ValueError, OverflowError):
        return None


class MetricMonitor:
    """The state and evaluation of one ``metric`` trigger."""

    def __init__(
        self,
        trigger: MetricTrigger,
        sink: MetricSink,
        *,
        resolve: bool = False,
        max_runs: int = MAX_RUNS,
    ) -> None:
        self.trigger = trigger
        query = trigger.metric
        self.metric = query.name
        self.threshold = query.threshold
        self._compare = _COMPARE[query.operator]
        self.range = span_us(query.range)
        self.firing_for = span_us(query.firing_for)
        self.matcher = TriggerMatcher(
            EventTrigger(
                match=trigger.match,
                match_related=trigger.match_related,
                expect={FLOW_RUN_EVENTS},
            )
        )
        self.resolve = resolve
        self.max_runs = max_runs
        self._sink = sink
        self.runs: OrderedDict[str, Run] = OrderedDict()  # least recently updated first
        # (anchor + range, seq, run id): samples counted in the window, and
        # runs anchored without a sample (kept for a late missing fact).
        self._counted: list[tuple[int, int, str]] = []
        self._uncounted: list[tuple[int, int, str]] = []
        self._pushes = 0
        # Integer sums, so the mean is the same however it was reached.
        self.total = 0
        self.samples = 0
        self.clock: int | None = None
        self.phase = Phase.ok
        self.since: int | None = None
        self.breach_start: int | None = None
        self.fired_at: int | None = None
        self.last_event: Event | None = None

    # -- the metric ---------------------------------------------------------------

    def value(self) -> float | None:
        """The metric over the current window: seconds, or a percentage for successes."""
        if not self.samples:
            return None
        if self.metric is PrefectMetric.successes:
            return 100 * self.total / self.samples
        return self.total / (self.samples * US_PER_S)

    def is_breaching(self) -> bool:
        """A value exists and compares with the threshold as the operator says."""
        value = self.value()
        return value is not None and self._compare(value, self.threshold)

    def _sample_of(self, run: Run) -> tuple[int | None, int | None]:
        """The run's anchor and its sample (µs, or 0/1 for successes)."""
        if self.metric is PrefectMetric.lateness:
            if run.start is None or run.scheduled is None:
                return run.start, None
            return run.start, max(0, run.start - run.scheduled)
        if run.end is None:
            return None, None
        if self.metric is PrefectMetric.successes:
            return run.end, int(run.completed)
        if run.start is None:
            return run.end, None
        return run.end, max(0, run.end - run.start)

    # -- runs ---------------------------------------------------------------------

    def _record(self, event: Event, occurred: int) -> bool:
        """Take the event's facts about its run; True when the metric's inputs changed."""
        state = event.event[len(FLOW_RUN_PREFIX) :]
        run_id = event.resource.get(RESOURCE_ID, "")
        run = self.runs.get(run_id)
        metric = self.metric
        if state == RUNNING_STATE:
            if metric is PrefectMetric.successes:
                return False
            if run is not None and run.start is not None and run.start <= occurred:
                return False
            run = run or Run()
            run.start = occurred
        elif state in TERMINAL_STATES:
            if metric is PrefectMetric.lateness:
                if run is None or run.start is not None:
                    return False
                self._forget(run_id, run)  # it ended without starting: no lateness ever
                return True
            if run is not None and run.end is not None and run.end <= occurred:
                return False
            run = run or Run()
            run.end = occurred
            run.completed = state == SUCCESS_STATE
        elif state in SCHEDULED_STATES:
            if metric is not PrefectMetric.lateness:
                return False
            if run is not None and run.start is not None and occurred > run.start:
                return False  # rescheduled after it started (a re-run): not its lateness
            given = scheduled_time(event)
            rank = (given is not None, occurred)
            if run is not None and run.scheduled_rank is not None and run.scheduled_rank >= rank:
                return False
            run = run or Run()
            run.scheduled = occurred if given is None else given
            run.scheduled_rank = rank
        else:
            return False
        self._refresh(run_id, run)
        return True

    def _refresh(self, run_id: str, run: Run) -> None:
        """Re-count a changed run, or forget it if its anchor is out of the window."""
        if run.sample is not None:
            self.total -= run.sample
            self.samples -= 1
            run.sample = None
        anchor, sample = self._sample_of(run)
        self._pushes += 1
        run.seq = self._pushes
        if anchor is not None and self.clock is not None and anchor <= self.clock - self.range:
            self.runs.pop(run_id, None)
            return
        self.runs[run_id] = run
        self.runs.move_to_end(run_id)
        if anchor is None:
            return
        entry = (anchor + self.range, run.seq, run_id)
        if sample is None:
            heapq.heappush(self._uncounted, entry)
            return
        heapq.heappush(self._counted, entry)
        run.sample = sample
        self.total += sample
        self.samples += 1

    def _forget(self, run_id: str, run: Run) -> None:
        if run.sample is not None:
            self.total -= run.sample
            self.samples -= 1
            run.sample = None
        self.runs.pop(run_id, None)

    def _evict(self) -> None:
        while len(self.runs) > self.max_runs:
            run_id, run = self.runs.popitem(last=False)
            self._forget(run_id, run)

    def _expire(self, now: int) -> None:
        """Forget every run whose anchor has left the window at ``now``."""
        for heap in (self._counted, self._uncounted):
            while heap and heap[0][0] <= now:
                _, seq, run_id = heapq.heappop(heap)
                run = self.runs.get(run_id)
                if run is not None and run.seq == seq:
                    self._forget(run_id, run)

    # -- time and phases ----------------------------------------------------------

    def _next_change(self) -> int | None:
        """The next moment the value or the phase can change with no new event."""
        heap = self._counted
        while heap:
            _, seq, run_id = heap[0]
            run = self.runs.get(run_id)
            if run is not None and run.seq == seq:
                break
            heapq.heappop(heap)
        best = heap[0][0] if heap else None
        if self.phase in (Phase.pending, Phase.recovering) and self.since is not None:
            ends = self.since + self.firing_for
            best = ends if best is None else min(best, ends)
        return best

    def _catch_up(self, now: int, fired_us: int) -> None:
        """Process every change due at or before ``now`` at its own time; the clock is ``now``."""
        while True:
            due = self._next_change()
            if due is None or due > now:
                break
            self.clock = due
            self._expire(due)
            self._step(due, fired_us)
        self.clock = now
        self._expire(now)

    def _step(self, now: int, fired_us: int) -> None:
        """Decide the phase at ``now`` from the current value."""
        breaching = self.is_breaching()
        phase = self.phase
        if phase is Phase.ok:
            if breaching:
                self.phase, self.since, self.breach_start = Phase.pending, now, now
        elif phase is Phase.pending:
            if not breaching:
                self.phase, self.since, self.breach_start = Phase.ok, now, None
            elif self.since is not None and now >= self.since + self.firing_for:
                self.phase, self.since, self.fired_at = Phase.fired, now, now
                self._emit(TriggerState.Triggered, now, fired_us)
        elif phase is Phase.fired:
            if not breaching:
                self.phase, self.since = Phase.recovering, now
        elif breaching:  # recovering, and breaching again: still the same firing
            self.phase, self.since = Phase.fired, self.fired_at
        elif self.since is not None and now >= self.since + self.firing_for:
            if self.resolve:
                self._emit(TriggerState.Resolved, now, fired_us)
            self.phase, self.since = Phase.ok, now
            self.breach_start = self.fired_at = None

    def _emit(self, state: TriggerState, now: int, fired_us: int) -> None:
        start = self.breach_start if self.breach_start is not None else now
        query = self.trigger.metric
        reading = MetricReading(
            query.name.value, query.operator.value, self.threshold, self.value()
        )
        self._sink(MetricFiring(state, start, now, self.last_event, fired_us, reading))

    # -- the engine's calls -------------------------------------------------------

    def on_event(self, event: Event, occurred: int, fired_us: int) -> None:
        """Evaluate one flow-run event the trigger is interested in."""
        now = occurred if self.clock is None else max(self.clock, occurred)
        self._catch_up(now, fired_us)
        if self._record(event, occurred):
            self.last_event = event
            self._evict()
        self._step(now, fired_us)

    def advance(self, as_of: int, fired_us: int) -> None:
        """Evaluate at ``as_of`` on the events clock (changes due by then included)."""
        if self.clock is not None and as_of <= self.clock:
            return
        self._catch_up(as_of, fired_us)
        self._step(as_of, fired_us)

    def sweep(self, as_of: int, now: int) -> None:
        """Nothing to sweep: samples leave the window as ``advance`` moves on."""

    def next_deadline(self) -> int | None:
        """When ``advance`` would next change anything: a sample leaving the
        window, or a ``firing_for`` ending; ``None`` until another event."""
        return self._next_change()

    def view(self) -> MetricView:
        """What ``explain`` shows: the query, the value and the phase."""
        query = self.trigger.metric
        return MetricView(
            name=query.name.value,
            operator=query.operator.value,
            threshold=query.threshold,
            range_s=query.range.total_seconds(),
            firing_for_s=query.firing_for.total_seconds(),
            value=self.value(),
            samples=self.samples,
            tracked_runs=len(self.runs),
            state=self.phase.value,
            since=from_us(self.since) if self.since is not None else None,
        )

    # -- state ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state as plain, msgpack-able values."""
        last = self.last_event
        return {
            "clock": self.clock,
            "phase": self.phase.value,
            "since": self.since,
            "breach": self.breach_start,
            "fired": self.fired_at,
            "last": last.model_dump(mode="json") if last is not None else None,
            "runs": [
                [
                    run_id,
                    run.scheduled,
                    list(run.scheduled_rank) if run.scheduled_rank is not None else None,
                    run.start,
                    run.end,
                    run.completed,
                ]
                for run_id, run in self.runs.items()
            ],
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the state with one ``snapshot`` took."""
        self.clear()
        self.clock = data["clock"]
        self.phase = Phase(data["phase"])
        self.since, self.breach_start, self.fired_at = data["since"], data["breach"], data["fired"]
        last = data["last"]
        self.last_event = Event.model_validate(last) if last is not None else None
        for run_id, scheduled, rank, start, end, completed in data["runs"]:
            run = Run()
            run.scheduled = scheduled
            run.scheduled_rank = (bool(rank[0]), rank[1]) if rank is not None else None
            run.start, run.end, run.completed = start, end, bool(completed)
            self._refresh(run_id, run)

    def clear(self) -> None:
        """Forget every run and return to ``ok``."""
        self.runs.clear()
        self._counted.clear()
        self._uncounted.clear()
        self.total = self.samples = 0
        self.clock = self.since = self.breach_start = self.fired_at = None
        self.phase = Phase.ok
        self.last_event = None
