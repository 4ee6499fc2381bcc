"""The body of an automation actor: one or more automations' evaluators.

One actor per automation is the default; ``automations_per_actor`` packs
several into one process. The actor holds state and calls the engine;
batches are applied in order. Events for automations it does not host (Ray
restarted it empty) are reported back, so the daemon recovers them and sends
those events again.

Crash safety: each automation's engine state is checkpointed to the store
with the last sequence number it has seen (when it is loaded, then on the
daemon's cadence and at shutdown). ``recover`` restores the checkpoint and
replays the event log from there, so a restarted daemon or actor ends up
where it was; events at or below that number arriving again are skipped.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marmot.actors.gc_thresholds import tune_gc
from marmot.actors.store import Store
from marmot.actors.wire import Batch, Outcome, pack, unpack
from marmot.engine.interest import InterestIndex
from marmot.engine.models.automations import Automation
from marmot.engine.models.explain import Explanation
from marmot.engine.timestamps import from_us, to_us
from marmot.engine.triggers.evaluator import Evaluator
from marmot.engine.triggers.firing import Firing

log = logging.getLogger(__name__)

_REPLAY_PAGE = 2000


@dataclass(slots=True)
class _Restored:
    """An automation restored from its checkpoint, before the log since is replayed."""

    evaluator: Evaluator
    document: str
    since: int  # the checkpoint's sequence number
    replayed: int = 0  # events of the log after it


def fingerprint(document: str) -> str:
    """Identifies one version of an automation: a checkpoint of another is not used."""
    return hashlib.sha256(document.encode()).hexdigest()[:32]


class AutomationHost:
    """Evaluates the automations placed in this actor."""

    def __init__(
        self,
        store_factory: Callable[[], Store] | None = None,
        resolved_states: bool = False,
        max_keys: int | None = None,
    ) -> None:
        """``max_keys`` caps each event trigger's open buckets (limits.max_buckets_per_trigger)."""
        tune_gc()  # this actor's process evaluates events in bulk
        nice = os.getpriority(os.PRIO_PROCESS, 0)  # this thread runs the actor's calls
        if nice > 0:
            log.warning(
                "automation actor runs at nice %d: on a busy node its calls wait for the "
                "CPU (start the node's Ray with RAY_worker_niceness=0)",
                nice,
            )
        self._store_factory = store_factory
        self._resolve = resolved_states  # SEMANTICS §5, Marmot's opt-in extension
        self._max_keys = max_keys
        self._store: Store | None = None
        self._evaluators: dict[str, Evaluator] = {}
        self._fingerprints: dict[str, str] = {}
        # Per automation: the last sequence number it has seen, and the one it
        # was recovered up to (events at or below it are not applied again).
        self._seen: dict[str, int] = {}
        self._floor: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._applied_seq = 0

    def _log(self) -> Store | None:
        if self._store is None and self._store_factory is not None:
            self._store = self._store_factory()
        return self._store

    def ping(self) -> int:
        """Liveness check; returns how many automations the actor hosts."""
        return len(self._evaluators)

    def load(self, document: str, state: dict[str, Any] | None = None) -> int | None:
        """Host an automation (JSON), fresh or from a snapshot; returns its next deadline.

        Loading an automation that is already here replaces it and resets its
        state (SEMANTICS §5). The new state is checkpointed at once, at the
        end of the event log, so a crash before the next checkpoint replays
        only what came after.
        """
        automation_id, deadline = self._load(document, state, self._last_seq())
        self._checkpoint([automation_id])
        return deadline

    def load_many(self, documents: list[str]) -> dict[str, int | None]:
        """``load`` for many automations (fresh), checkpointed in one transaction;
        returns each one's next deadline."""
        seq = self._last_seq()
        deadlines = dict(self._load(document, None, seq) for document in documents)
        self._checkpoint(list(deadlines))
        return deadlines

    def _last_seq(self) -> int:
        store = self._log()
        return store.events.last_seq() if store is not None else 0

    def _load(
        self, document: str, state: dict[str, Any] | None, seq: int
    ) -> tuple[str, int | None]:
        automation = Automation.model_validate_json(document)
        evaluator = Evaluator(automation, resolve=self._resolve, max_keys=self._max_keys)
        if state is not None:
            evaluator.restore(state)
        automation_id = str(automation.id)
        # Nothing is skipped after a fresh load: events routed from now on are new to it.
        self._host(automation_id, evaluator, document, seq, floor=0)
        return automation_id, evaluator.next_deadline_us()

    def recover_many(
        self, documents: list[str], now_us: int, held: list[int] | None = None
    ) -> bytes:
        """``recover`` for many automations in one call (a restart of a packed fleet):
        the log since their checkpoints is read once for them all. Returns one
        packed ``Outcome``."""
        return self._recover(documents, held).pack()

    def recover(self, document: str, now_us: int, held: list[int] | None = None) -> bytes:
        """Host an automation from its checkpoint, replaying the event log since.

        Returns a packed ``Outcome``: the firings the replay produced (their
        ids are deterministic, so the daemon acts only on those it has not
        dispatched) and the next deadline; a deadline that passed while the
        automation was down comes back due at once. Without a usable
        checkpoint (none, or one of another version) the automation starts
        fresh, as ``load`` does. ``held``: sequence numbers of followers the router
        holds back; the replay skips them (they come when released).
        """
        return self._recover([document], held).pack()

    def _recover(self, documents: list[str], held: list[int] | None) -> Outcome:
        store = self._log()
        deadlines: dict[str, int | None] = {}
        restored: dict[str, _Restored] = {}
        for document in documents:
            automation = Automation.model_validate_json(document)
            automation_id = str(automation.id)
            saved = store.checkpoints.load(automation_id) if store is not None else None
            state: dict[str, Any] = unpack(saved[1]) if saved is not None else {}
            if store is None or saved is None or state.get("fingerprint") != fingerprint(document):
                deadlines[automation_id] = self.load(document)
                continue
            evaluator = Evaluator(automation, resolve=self._resolve, max_keys=self._max_keys)
            evaluator.restore(state["state"])
            restored[automation_id] = _Restored(evaluator, document, saved[0])
        firings: list[Firing] = []
        replayed = 0
        if store is not None and restored:
            end = self._replay(store, restored, set(held or ()), firings)
            for automation_id, r in restored.items():
                upto = max(r.since, end)
                self._host(automation_id, r.evaluator, r.document, upto, floor=upto)
                self._dirty.add(automation_id)
                deadlines[automation_id] = r.evaluator.next_deadline_us()
                replayed += r.replayed
                extra = {"automation": automation_id, "from_seq": r.since, "replayed": r.replayed}
                log.info("automation recovered", extra=extra)
        return Outcome(firings, deadlines, self._applied_seq, replayed)

    @staticmethod
    def _replay(
        store: Store, restored: dict[str, _Restored], skip: set[int], firings: list[Firing]
    ) -> int:
        """Apply the log after each automation's checkpoint, read once from the oldest
        of them, each event to the automations interested in it (the daemon's
        routing); returns the last sequence number read (the oldest checkpoint's
        when there was nothing after it)."""
        index: InterestIndex[str] = InterestIndex()
        for automation_id, r in restored.items():
            index.set(automation_id, r.evaluator.matchers)
        seq = end = min(r.since for r in restored.values())
        # Events read after each checkpoint's sequence number (the replay count).
        after = dict.fromkeys({r.since for r in restored.values()}, 0)
        while page := store.events.read_after(seq, _REPLAY_PAGE):
            seqs = [logged_seq for logged_seq, _ in page]
            for since in after:
                after[since] += len(seqs) - bisect.bisect_right(seqs, since)
            for logged_seq, event in page:
                if logged_seq in skip:
                    continue
                targets = [a for a in index.route(event) if restored[a].since < logged_seq]
                if not targets:
                    continue
                occurred = to_us(event.occurred)
                received = to_us(event.received) if event.received else occurred
                for automation_id in targets:
                    evaluator = restored[automation_id].evaluator
                    firings.extend(evaluator.apply_at(event, occurred, received))
            seq = end = page[-1][0]
        for r in restored.values():
            r.replayed = after[r.since]
        return end

    def _host(
        self, automation_id: str, evaluator: Evaluator, document: str, seq: int, *, floor: int
    ) -> None:
        self._evaluators[automation_id] = evaluator
        self._fingerprints[automation_id] = fingerprint(document)
        self._seen[automation_id] = seq
        self._floor[automation_id] = floor

    def unload(self, automation_id: str) -> bool:
        """Stop hosting an automation; returns whether it was here."""
        self._fingerprints.pop(automation_id, None)
        self._seen.pop(automation_id, None)
        self._floor.pop(automation_id, None)
        self._dirty.discard(automation_id)
        return self._evaluators.pop(automation_id, None) is not None

    def checkpoint(self, upto: int = 0) -> int:
        """Checkpoint every automation whose state changed since its last one; returns how
        many checkpoints were written or moved (see ``checkpoint_part``)."""
        return self.checkpoint_part(upto, None)[0]

    def checkpoint_part(self, upto: int, limit: int | None) -> tuple[int, int]:
        """Checkpoint at most ``limit`` (None: all) of the automations whose state
        changed since their last checkpoint; returns how many checkpoints were
        written or moved, and how many changed automations are left.

        Parts keep each call short: the daemon checkpoints a shared actor of
        thousands of automations a few hundred at a time, so a proactive
        deadline's evaluation queued meanwhile waits for one part, not for
        every snapshot (a hundred milliseconds and more after a burst).

        ``upto``: a sequence number up to which the daemon has sent this actor
        every event it must see (calls arrive in order). An automation that
        saw nothing since is at ``upto`` all the same, so its checkpoint moves
        there: an idle automation does not hold the log back for retention or
        make a restart replay what it has no interest in. Its state is the one
        saved, so only the sequence number is written (a shared actor of
        thousands of mostly idle automations would otherwise snapshot them all,
        every time, and hold up the calls queued behind).
        """
        idle: list[str] = []
        for automation_id, seen in self._seen.items():
            if seen < upto:
                self._seen[automation_id] = upto
                if automation_id not in self._dirty:
                    idle.append(automation_id)
        dirty = self._dirty
        changed = list(dirty if limit is None else itertools.islice(dirty, limit))
        self._checkpoint(changed)
        store = self._log()
        if store is not None:
            store.checkpoints.advance_many(idle, upto)
        return len(changed) + len(idle), len(dirty)

    def _checkpoint(self, automation_ids: list[str]) -> None:
        store = self._log()
        if store is None:
            return
        saved: list[tuple[str, int, bytes]] = []
        for automation_id in automation_ids:
            evaluator = self._evaluators.get(automation_id)
            if evaluator is None:
                continue
            state = {
                "fingerprint": self._fingerprints[automation_id],
                "state": evaluator.snapshot(),
            }
            saved.append((automation_id, self._seen[automation_id], pack(state)))
        store.checkpoints.save_many(saved)
        self._dirty.difference_update(automation_ids)

    def apply(self, blob: bytes) -> bytes:
        """Evaluate a batch of events (see ``wire.Batch``); returns a packed ``Outcome``."""
        firings: list[Firing] = []
        touched: set[str] = set()
        missing: set[str] = set()
        evaluated = 0
        evaluators, floor, seen = self._evaluators, self._floor, self._seen
        for seq, targets, event in Batch.unpack(blob):
            occurred = to_us(event.occurred)
            now = to_us(event.received) if event.received else occurred
            for automation_id in targets:
                evaluator = evaluators.get(automation_id)
                if evaluator is None:
                    # Not hosted here: Ray restarted this actor empty. The
                    # daemon recovers it when the outcome says so.
                    missing.add(automation_id)
                    continue
                if 0 < seq <= floor[automation_id]:
                    continue  # already replayed from the log on recovery
                # (A follower that was held back comes with its sequence number
                # negated: it is never one the replay applied.) The router sent
                # the event because the automation is interested in it.
                fired = evaluator.apply_routed(event, occurred, now)
                if fired:
                    firings.extend(fired)
                touched.add(automation_id)
                if seq > seen[automation_id]:
                    seen[automation_id] = seq
                evaluated += 1
            if seq > self._applied_seq:
                self._applied_seq = seq
        self._dirty |= touched
        deadlines = {a: self._evaluators[a].next_deadline_us() for a in touched}
        return Outcome(firings, deadlines, self._applied_seq, evaluated, sorted(missing)).pack()

    def expire(self, as_of_us: int, now_us: int, automation_ids: list[str]) -> bytes:
        """Proactive evaluation of the given automations; returns a packed ``Outcome``."""
        firings: list[Firing] = []
        deadlines: dict[str, int | None] = {}
        missing: list[str] = []
        as_of, now = from_us(as_of_us), from_us(now_us)
        for automation_id in automation_ids:
            evaluator = self._evaluators.get(automation_id)
            if evaluator is None:
                missing.append(automation_id)
                continue
            firings.extend(evaluator.advance(as_of, now))
            deadlines[automation_id] = evaluator.next_deadline_us()
            self._dirty.add(automation_id)
        return Outcome(firings, deadlines, self._applied_seq, 0, missing).pack()

    def explain(
        self, automation_id: str, limit: int | None = None, offset: int = 0
    ) -> Explanation | None:
        """The automation's buckets (a page of ``limit`` per trigger from ``offset``) and
        deadline, or None when it is not hosted here."""
        evaluator = self._evaluators.get(automation_id)
        if evaluator is None:
            return None
        return evaluator.explain(limit=limit, offset=offset)

    def state(self, automation_id: str) -> dict[str, Any] | None:
        """A copy of one automation's engine state (``Evaluator.snapshot``), for dry
        runs that must not touch it; None when it is not hosted here."""
        evaluator = self._evaluators.get(automation_id)
        return evaluator.snapshot() if evaluator is not None else None

    def snapshot(self) -> dict[str, Any]:
        """Every hosted automation's state plus the last sequence number applied."""
        return {
            "applied_seq": self._applied_seq,
            "automations": {a: e.snapshot() for a, e in self._evaluators.items()},
        }
