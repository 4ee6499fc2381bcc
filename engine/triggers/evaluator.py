"""One automation's whole trigger state, evaluated as a unit.

``Evaluator`` is what the daemon's automation actor wraps: ``apply`` feeds it
events, ``advance`` runs proactive evaluation at a time the caller chooses,
``next_deadline`` says when that should next happen, and ``snapshot`` /
``restore`` carry the state across restarts.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from marmot.engine.errors import ValidationFailed
from marmot.engine.matching import TriggerMatcher
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.models.explain import BucketView, Explanation, HeldView, TriggerView
from marmot.engine.models.triggers import EventTrigger, MetricTrigger, Posture, Trigger
from marmot.engine.timestamps import EPOCH, from_us, to_us
from marmot.engine.triggers.buckets import BucketTrigger, LeafFiring
from marmot.engine.triggers.composite import CompositeState
from marmot.engine.triggers.firing import Firing, TriggerState, firing_id
from marmot.engine.triggers.metric import MetricFiring, MetricMonitor
from marmot.engine.triggers.protocol import TriggerLogic
from marmot.engine.triggers.resolution import Key, OpenState, Resolutions

# ``next_deadline`` returns this when advance() has work to do right away.
DUE_NOW = EPOCH
# The layout of ``Evaluator.snapshot``, as checkpoints store it.
SNAPSHOT_VERSION = 1

_Parent = tuple[int, int] | None  # (composite index, child position) or top level


class Evaluator:
    """Evaluates one automation's trigger tree over events and time."""

    def __init__(
        self, automation: Automation, *, resolve: bool = False, max_keys: int | None = None
    ) -> None:
        """``resolve`` turns on Resolved states (SEMANTICS §5, Marmot's opt-in
        extension; see ``resolution`` and ``metric``): an automation whose
        trigger is an event or metric trigger then also reports Resolved
        firings. ``max_keys`` caps each event trigger's open buckets (see
        ``BucketTrigger``); None: no cap, as Prefect."""
        self.automation = automation
        self.resolve = resolve
        self.max_keys = max_keys
        self.leaves: list[BucketTrigger] = []
        self._leaf_paths: list[str] = []
        self._leaf_parents: list[_Parent] = []
        self.metrics: list[MetricMonitor] = []
        self._metric_paths: list[str] = []
        self._metric_parents: list[_Parent] = []
        # Event and metric triggers in declared order: events and time reach
        # them in this order, so simultaneous child firings do too.
        self._evaluated: list[TriggerLogic] = []
        self.composites: list[CompositeState] = []
        self._composite_paths: list[str] = []
        self._composite_parents: list[_Parent] = []
        self._out: list[Firing] = []
        # The events-clock time of the evaluation under way (see Firing.evaluated_us).
        self._evaluating_us: int | None = None
        # Firing ids are named from the id's text: made once, not per firing.
        self._id_text = str(automation.id)
        self._build(automation.trigger, "trigger", None)
        # A tree of one event (or metric) trigger: a routed event concerns it.
        self._single = self._evaluated[0] if len(self._evaluated) == 1 else None

    def _build(self, trigger: Trigger, path: str, parent: _Parent) -> None:
        if isinstance(trigger, EventTrigger):
            index = len(self.leaves)
            leaf = BucketTrigger(
                trigger, functools.partial(self._leaf_fired, index), max_keys=self.max_keys
            )
            if self.resolve and parent is None:
                leaf.resolutions = Resolutions(
                    proactive=leaf.is_proactive,
                    threshold=leaf.threshold,
                    immediate=leaf.is_immediate,
                    sink=functools.partial(self._leaf_resolved, index),
                )
            self.leaves.append(leaf)
            self._leaf_paths.append(path)
            self._leaf_parents.append(parent)
            self._evaluated.append(leaf)
            return
        if isinstance(trigger, MetricTrigger):
            index = len(self.metrics)
            monitor = MetricMonitor(
                trigger,
                functools.partial(self._metric_fired, index),
                # Resolved states, like event triggers', only at the top level.
                resolve=self.resolve and parent is None,
            )
            self.metrics.append(monitor)
            self._metric_paths.append(path)
            self._metric_parents.append(parent)
            self._evaluated.append(monitor)
            return
        index = len(self.composites)
        self.composites.append(CompositeState(trigger, self.automation.id))
        self._composite_paths.append(path)
        self._composite_parents.append(parent)
        for position, child in enumerate(trigger.triggers):
            self._build(child, f"{path}.triggers[{position}]", (index, position))

    @property
    def is_enabled(self) -> bool:
        """Disabled automations are not evaluated (SEMANTICS §5)."""
        return self.automation.enabled

    # -- firing propagation ------------------------------------------------------

    def _leaf_fired(self, index: int, leaf: LeafFiring) -> None:
        path = self._leaf_paths[index]
        event_id = leaf.event.id if leaf.event else None
        trigger = self.leaves[index]
        firing = Firing(
            id=firing_id(self._id_text, path, leaf.key, leaf.start, leaf.end, event_id),
            automation_id=self.automation.id,
            trigger_path=path,
            labels=trigger.matcher.labels(leaf.key),
            triggering_event=leaf.event,
            fired_us=leaf.fired_us,
            posture=trigger.trigger.posture,
            deadline_us=leaf.end if trigger.is_proactive else None,
            evaluated_us=self._evaluating_us,
        )
        self._propagate(firing, self._leaf_parents[index])

    def _leaf_resolved(
        self, index: int, key: Key, state: OpenState, event: Event | None, now: int
    ) -> None:
        leaf = self.leaves[index]
        path = self._leaf_paths[index]
        self._out.append(
            Firing(
                id=firing_id(self.automation.id, path, "resolved", key, state.start, state.end),
                automation_id=self.automation.id,
                trigger_path=path,
                labels=leaf.matcher.labels(key),
                triggering_event=event,
                fired_us=now,
                posture=leaf.trigger.posture,
                state=TriggerState.Resolved,
            )
        )

    def _metric_fired(self, index: int, fired: MetricFiring) -> None:
        path = self._metric_paths[index]
        resolved = fired.state is TriggerState.Resolved
        firing = Firing(
            # The breach and the moment it fired (or resolved) name the firing.
            id=firing_id(
                self.automation.id,
                path,
                "resolved" if resolved else "metric",
                fired.breach_start,
                fired.at,
            ),
            automation_id=self.automation.id,
            trigger_path=path,
            labels={},
            triggering_event=fired.event,
            fired_us=fired.fired_us,
            posture=Posture.Metric,
            state=fired.state,
            # The end of its firing_for, a deadline on the events clock.
            deadline_us=fired.at,
            evaluated_us=self._evaluating_us,
            metric=fired.reading,
        )
        if resolved:
            self._out.append(firing)  # only a top-level metric trigger resolves
        else:
            self._propagate(firing, self._metric_parents[index])

    def _propagate(self, firing: Firing, parent: _Parent) -> None:
        while parent is not None:
            index, position = parent
            completed = self.composites[index].child_fired(position, firing)
            if completed is None:
                return
            path = self._composite_paths[index]
            children = tuple(f.id for f in completed)
            # SEMANTICS §4: a composite fires with the last child's event and no labels.
            firing = Firing(
                id=firing_id(self.automation.id, path, *children),
                automation_id=self.automation.id,
                trigger_path=path,
                labels={},
                triggering_event=firing.triggering_event,
                fired_us=firing.fired_us,
                child_ids=children,
                deadline_us=firing.deadline_us,
                evaluated_us=firing.evaluated_us,
            )
            parent = self._composite_parents[index]
        self._out.append(firing)

    def _drain(self) -> list[Firing]:
        out, self._out = self._out, []
        return out

    # -- evaluation ----------------------------------------------------------------

    @property
    def matchers(self) -> list[TriggerMatcher]:
        """The matchers of the tree's event and metric triggers: what the
        interest index needs to route exactly the events they look at."""
        return [leaf.matcher for leaf in self._evaluated]

    def is_interested(self, event: Event) -> bool:
        """Whether any event or metric trigger of the tree is interested in ``event``."""
        return any(leaf.matcher.is_interested(event) for leaf in self._evaluated)

    def apply(self, events: Iterable[Event]) -> list[Firing]:
        """Evaluate events reactively, in order; return the automation's firings.

        Each event is evaluated at its ``occurred`` time; its firings are
        stamped with its ``received`` time (the processing clock), or
        ``occurred`` when it has none.
        """
        if not self.automation.enabled:
            return []
        for event in events:
            self._apply_one(event, None, None)
        return self._drain()

    def apply_at(self, event: Event, occurred_us: int, now_us: int) -> list[Firing]:
        """Evaluate one event processed at ``now_us`` (its ``occurred`` given in µs)."""
        if not self.automation.enabled:
            return []
        self._apply_one(event, occurred_us, now_us)
        return self._drain()

    def apply_routed(self, event: Event, occurred_us: int, now_us: int) -> list[Firing]:
        """``apply_at`` for an event routed here because the automation is interested
        in it (``matchers``, through the interest index): a tree of one trigger
        does not test its interest again."""
        single = self._single
        if single is None:
            return self.apply_at(event, occurred_us, now_us)
        if not self.automation.enabled:
            return []
        self._evaluating_us = occurred_us
        single.on_event(event, occurred_us, now_us)
        return self._drain()

    def _apply_one(self, event: Event, occurred: int | None, now: int | None) -> None:
        for leaf in self._evaluated:
            if leaf.matcher.is_interested(event):
                if occurred is None:
                    occurred = to_us(event.occurred)
                if now is None:
                    now = to_us(event.received) if event.received else occurred
                self._evaluating_us = occurred
                leaf.on_event(event, occurred, now)

    def advance(self, as_of: datetime, now: datetime, *, sweep: bool = True) -> list[Firing]:
        """Proactive evaluation at ``as_of`` (events clock), then (unless ``sweep`` is
        off) the sweep of SEMANTICS §3.3; firings stamped ``now``."""
        if not self.automation.enabled:
            return []
        as_of_us, now_us = to_us(as_of), to_us(now)
        self._evaluating_us = as_of_us
        for leaf in self._evaluated:
            leaf.advance(as_of_us, now_us)
        if sweep:
            for leaf in self._evaluated:
                leaf.sweep(as_of_us, now_us)
        return self._drain()

    def sweep(self, as_of: datetime, now: datetime) -> None:
        """Only the sweep of SEMANTICS §3.3 at ``as_of``: it fires nothing."""
        if not self.automation.enabled:
            return
        as_of_us, now_us = to_us(as_of), to_us(now)
        for leaf in self._evaluated:
            leaf.sweep(as_of_us, now_us)

    def next_deadline(self) -> datetime | None:
        """When ``advance`` should next run, on the events clock.

        ``DUE_NOW`` when it has work right away; ``None`` when nothing is
        pending until more events arrive.
        """
        if not self.automation.enabled:
            return None
        deadline = self.next_deadline_us()
        if deadline is None:
            return None
        return DUE_NOW if deadline < 0 else from_us(deadline)

    def next_deadline_us(self) -> int | None:
        """``next_deadline`` in microseconds; ``-1`` for due now."""
        best: int | None = None
        for leaf in self._evaluated:
            deadline = leaf.next_deadline()
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def reset(self) -> None:
        """Forget all state, as when the automation changes (SEMANTICS §5)."""
        for leaf in self._evaluated:
            leaf.clear()
        for composite in self.composites:
            composite.clear()

    @property
    def open_buckets(self) -> int:
        """How many buckets are open across the tree."""
        return sum(len(leaf.buckets) for leaf in self.leaves)

    # -- snapshot / restore ------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state as plain, msgpack-able values: each trigger's ``snapshot`` in one
        column per kind (the checkpoint format, version ``SNAPSHOT_VERSION``)."""
        leaves = [leaf.snapshot() for leaf in self.leaves]
        return {
            "v": SNAPSHOT_VERSION,
            "automation": str(self.automation.id),
            "leaves": [leaf["buckets"] for leaf in leaves],
            "composites": [composite.snapshot() for composite in self.composites],
            "unresolved": [leaf["unresolved"] for leaf in leaves],
            "metrics": [monitor.snapshot() for monitor in self.metrics],
            "held": [leaf["held"] for leaf in leaves],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with one ``snapshot`` took of the same automation.

        Raises ``ValidationFailed`` if it does not fit. A snapshot written before
        held events (SEMANTICS §3.4) existed has none.
        """
        if state.get("v") != SNAPSHOT_VERSION:
            raise ValidationFailed(f"unsupported snapshot version {state.get('v')!r}")
        if state.get("automation") != str(self.automation.id):
            raise ValidationFailed("snapshot belongs to another automation")
        leaves = state["leaves"]
        held = state.get("held") or [[] for _ in leaves]
        columns = (leaves, state["unresolved"], held)
        if any(len(column) != len(self.leaves) for column in columns) or (
            len(state["composites"]) != len(self.composites)
            or len(state["metrics"]) != len(self.metrics)
        ):
            raise ValidationFailed("snapshot does not fit this automation's triggers")
        self.reset()
        for leaf, buckets, unresolved, waiting in zip(self.leaves, *columns, strict=True):
            leaf.restore({"buckets": buckets, "unresolved": unresolved, "held": waiting})
        for composite, rows in zip(self.composites, state["composites"], strict=True):
            composite.restore(rows)
        for monitor, data in zip(self.metrics, state["metrics"], strict=True):
            monitor.restore(data)

    # -- explain -------------------------------------------------------------------

    def explain(self, *, limit: int | None = None, offset: int = 0) -> Explanation:
        """Every trigger with its open buckets or recorded child firings.

        ``limit``/``offset`` page each trigger's buckets (oldest start first;
        ``buckets_total`` says how many there are), so a trigger with a million
        keys explains in a page, not all at once.
        """
        views: list[TriggerView] = []
        for path, leaf in zip(self._leaf_paths, self.leaves, strict=True):
            views.append(
                TriggerView(
                    path=path,
                    type="event",
                    posture=leaf.trigger.posture.value,
                    threshold=leaf.threshold,
                    within_s=leaf.trigger.within.total_seconds(),
                    buckets=[
                        BucketView(
                            labels=leaf.matcher.labels(key),
                            start=from_us(b.start),
                            end=from_us(b.end),
                            count=b.count,
                            last_event_id=b.last_event_id,
                        )
                        for key, b in leaf.page(limit, offset)
                    ],
                    buckets_total=len(leaf.buckets),
                    evicted_buckets=leaf.evicted,
                    unresolved=[
                        BucketView(
                            labels=leaf.matcher.labels(key),
                            start=from_us(o.start),
                            end=from_us(o.end),
                            count=o.count,
                            last_event_id=o.event.id if o.event else None,
                        )
                        for key, o in (leaf.resolutions.items() if leaf.resolutions else ())
                    ],
                    held=[
                        HeldView(
                            labels=leaf.matcher.labels(h.key),
                            count=h.count,
                            oldest=from_us(h.oldest),
                            newest=from_us(h.newest),
                        )
                        for h in (leaf.held.summaries() if leaf.held is not None else ())
                    ],
                )
            )
        for path, monitor in zip(self._metric_paths, self.metrics, strict=True):
            views.append(
                TriggerView(
                    path=path, type="metric", posture=Posture.Metric.value, metric=monitor.view()
                )
            )
        for path, composite in zip(self._composite_paths, self.composites, strict=True):
            views.append(
                TriggerView(
                    path=path,
                    type=composite.trigger.type,
                    within_s=(
                        composite.trigger.within.total_seconds()
                        if composite.trigger.within is not None
                        else None
                    ),
                    recorded_children={
                        f"{path}.triggers[{child}]": f.fired_at
                        for child, f in sorted(composite.recorded.items())
                    },
                )
            )
        views.sort(key=lambda v: v.path)
        return Explanation(
            automation_id=self.automation.id,
            name=self.automation.name,
            enabled=self.automation.enabled,
            triggers=views,
            next_deadline=self.next_deadline(),
            open_buckets=self.open_buckets,
        )
