"""Checkpoint and recovery of an automation actor's state, without Ray.

A host applies batches of logged events, checkpoints, and dies; a new host
recovers from the checkpoint plus the log and must end in the same state,
fire what the dead one would have fired, and not apply an event twice.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from marmot.actors.automation import AutomationHost
from marmot.actors.store import Store
from marmot.actors.wire import Batch, Outcome
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from tests.engine.factories import event

AUTOMATION = Automation.model_validate(
    {
        "id": "3f2e1d0c-9b8a-4765-8432-10fedcba9876",
        "name": "three failures",
        "trigger": {
            "expect": ["job.failed"],
            "for_each": ["prefect.resource.id"],
            "threshold": 3,
            "within": 3600,
        },
    }
)
DOCUMENT = AUTOMATION.model_dump_json()
AID = str(AUTOMATION.id)


def received(e: Event) -> Event:
    return e.model_copy(update={"received": e.occurred})


class Log:
    """The event log side of the daemon: append, then route to the host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = Store.open(path)

    def factory(self) -> Store:
        return Store.open(self.path)

    def append(self, *events: Event) -> list[tuple[int, Event]]:
        logged = [received(e) for e in events]
        return list(zip(self.store.events.append(logged), logged, strict=True))

    @staticmethod
    def batch(rows: list[tuple[int, Event]]) -> bytes:
        return Batch([(seq, [AID], e) for seq, e in rows]).pack()


def buckets(host: AutomationHost) -> Any:
    explained = host.explain(AID)
    assert explained is not None
    return explained.model_dump(mode="json")["triggers"]


def failed(t: float, resource: str = "job.1") -> Event:
    return event("job.failed", t, resource_id=resource)


def test_recovery_restores_the_checkpoint_and_replays_the_log_since(tmp_path: Path) -> None:
    log = Log(tmp_path / "marmot.db")
    first = AutomationHost(log.factory)
    first.load(DOCUMENT)
    first.apply(log.batch(log.append(failed(1))))
    assert first.checkpoint() == 1
    # Logged and applied after the checkpoint, then the host dies.
    first.apply(log.batch(log.append(failed(2))))
    before = buckets(first)

    second = AutomationHost(log.factory)
    outcome = Outcome.unpack(second.recover(DOCUMENT, now_us=0))
    assert outcome.evaluated == 1  # the one event after the checkpoint
    assert outcome.firings == []
    assert buckets(second) == before
    # The third failure fires, as it would have on the first host.
    fired = Outcome.unpack(second.apply(log.batch(log.append(failed(3))))).firings
    assert len(fired) == 1 and fired[0].labels == {"prefect.resource.id": "job.1"}


def test_events_replayed_on_recovery_are_not_applied_again(tmp_path: Path) -> None:
    log = Log(tmp_path / "marmot.db")
    first = AutomationHost(log.factory)
    first.load(DOCUMENT)
    rows = log.append(failed(1), failed(2))
    second = AutomationHost(log.factory)  # recovers before the batch reaches it
    second.recover(DOCUMENT, now_us=0)
    # The router sends the same logged events again: they are skipped.
    outcome = Outcome.unpack(second.apply(log.batch(rows)))
    assert outcome.evaluated == 0
    fired = Outcome.unpack(second.apply(log.batch(log.append(failed(3))))).firings
    assert len(fired) == 1


def test_firings_lost_in_a_crash_come_back_with_the_same_ids(tmp_path: Path) -> None:
    log = Log(tmp_path / "marmot.db")
    first = AutomationHost(log.factory)
    first.load(DOCUMENT)
    rows = log.append(failed(1), failed(2), failed(3))
    original = Outcome.unpack(first.apply(log.batch(rows))).firings
    assert len(original) == 1
    # The host dies before any checkpoint after the load: recovery replays all three.
    second = AutomationHost(log.factory)
    again = Outcome.unpack(second.recover(DOCUMENT, now_us=0)).firings
    assert [f.id for f in again] == [f.id for f in original]


def test_a_checkpoint_of_another_version_is_not_used(tmp_path: Path) -> None:
    log = Log(tmp_path / "marmot.db")
    first = AutomationHost(log.factory)
    first.load(DOCUMENT)
    first.apply(log.batch(log.append(failed(1), failed(2))))
    first.checkpoint()
    changed = AUTOMATION.model_copy(update={"description": "edited"}).model_dump_json()
    second = AutomationHost(log.factory)
    outcome = Outcome.unpack(second.recover(changed, now_us=0))
    assert outcome.evaluated == 0
    assert all(not t.get("buckets") for t in buckets(second))


def test_checkpoint_writes_only_what_changed(tmp_path: Path) -> None:
    log = Log(tmp_path / "marmot.db")
    host = AutomationHost(log.factory)
    host.load(DOCUMENT)  # checkpointed at once
    assert host.checkpoint() == 0
    host.apply(log.batch(log.append(failed(1))))
    assert host.checkpoint() == 1
    assert host.checkpoint() == 0
    saved = log.store.checkpoints.load(AID)
    assert saved is not None and saved[0] == log.store.events.last_seq()


def test_an_idle_automations_checkpoint_moves_to_what_the_daemon_has_sent(tmp_path: Path) -> None:
    log = Log(tmp_path / "marmot.db")
    host = AutomationHost(log.factory)
    host.load(DOCUMENT)
    host.apply(log.batch(log.append(failed(1))))
    host.checkpoint()
    # Events it has no interest in go to the log, never to this actor.
    others = log.append(*(event("other.thing", n) for n in range(5)))
    assert host.checkpoint() == 0  # nothing changed and nothing vouched for
    assert host.checkpoint(upto=others[-1][0]) == 1
    saved = log.store.checkpoints.load(AID)
    assert saved is not None and saved[0] == others[-1][0]
    assert host.checkpoint(upto=others[-1][0]) == 0
    # Recovery starts there: nothing to replay, the state is intact.
    second = AutomationHost(log.factory)
    outcome = Outcome.unpack(second.recover(DOCUMENT, now_us=0))
    assert outcome.evaluated == 0
    assert buckets(second) == buckets(host)


def test_an_idle_automation_is_not_snapshotted_again_when_its_checkpoint_moves(
    tmp_path: Path,
) -> None:
    log = Log(tmp_path / "marmot.db")
    host = AutomationHost(log.factory)
    host.load(DOCUMENT)
    host.apply(log.batch(log.append(failed(1))))
    host.checkpoint()
    state_before = log.store.checkpoints.load(AID)
    assert state_before is not None
    snapshots: list[str] = []
    evaluator = host._evaluators[AID]
    snapshot = evaluator.snapshot
    evaluator.snapshot = lambda: snapshots.append(AID) or snapshot()  # type: ignore[method-assign]
    others = log.append(*(event("other.thing", n) for n in range(3)))
    assert host.checkpoint(upto=others[-1][0]) == 1
    assert snapshots == []
    saved = log.store.checkpoints.load(AID)
    assert saved == (others[-1][0], state_before[1])
    # Once it changes, it is snapshotted again.
    host.apply(log.batch(log.append(failed(2))))
    assert host.checkpoint() == 1
    assert snapshots == [AID]


def copies(host: AutomationHost, count: int) -> tuple[list[str], list[str]]:
    """Load ``count`` copies of AUTOMATION (ids 1, 2, ...) into ``host``; returns
    their ids and documents."""
    documents = [
        AUTOMATION.model_copy(
            update={"id": uuid.UUID(int=n + 1), "name": f"a{n}"}
        ).model_dump_json()
        for n in range(count)
    ]
    for document in documents:
        host.load(document)
    return [str(uuid.UUID(int=n + 1)) for n in range(count)], documents


def test_changed_automations_are_checkpointed_in_parts(tmp_path: Path) -> None:
    # A shared actor checkpoints a few hundred at a time: the daemon's deadline calls
    # go in between the parts instead of waiting for every snapshot.
    log = Log(tmp_path / "marmot.db")
    host = AutomationHost(log.factory)
    ids, _ = copies(host, 5)
    rows = log.append(*(failed(n) for n in range(3)))
    host.apply(Batch([(seq, ids, e) for seq, e in rows]).pack())
    assert host.checkpoint_part(0, 2) == (2, 3)
    assert host.checkpoint_part(0, 2) == (2, 1)
    assert host.checkpoint_part(0, 2) == (1, 0)
    assert host.checkpoint_part(0, 2) == (0, 0)
    last = log.store.events.last_seq()
    assert all(log.store.checkpoints.load(a) is not None for a in ids)
    assert {log.store.checkpoints.load(a)[0] for a in ids} == {last}  # type: ignore[index]


def test_recovering_many_reads_the_log_once_and_ends_as_recovering_each(tmp_path: Path) -> None:
    # A restarted fleet: 250 automations per call, each replaying the log since its own
    # checkpoint. Reading (and decoding) the log once per automation took minutes.
    log = Log(tmp_path / "marmot.db")
    first = AutomationHost(log.factory)
    ids, documents = copies(first, 4)
    first.apply(Batch([(s, ids, e) for s, e in log.append(failed(1), failed(2))]).pack())
    first.checkpoint()
    # After the checkpoint: a third failure for all (two are checkpointed after it,
    # two stay behind it), events nobody is interested in, another failure.
    first.apply(Batch([(s, ids, e) for s, e in log.append(failed(3))]).pack())
    first.checkpoint_part(0, 2)
    log.append(*(event("other.thing", n) for n in range(5)))
    first.apply(Batch([(s, ids, e) for s, e in log.append(failed(4, "job.2"))]).pack())

    def recovered(together: bool) -> tuple[AutomationHost, Outcome, int]:
        host = AutomationHost(log.factory)
        reads = 0
        store = host._log()
        assert store is not None
        read_after = store.events.read_after

        def counted(seq: int, limit: int = 1000) -> Any:
            nonlocal reads
            reads += 1
            return read_after(seq, limit)

        store.events.read_after = counted  # type: ignore[method-assign]
        if together:
            outcome = Outcome.unpack(host.recover_many(documents, now_us=0))
        else:
            parts = [Outcome.unpack(host.recover(d, now_us=0)) for d in documents]
            outcome = Outcome(
                [f for p in parts for f in p.firings],
                {k: v for p in parts for k, v in p.deadlines.items()},
                0,
                sum(p.evaluated for p in parts),
            )
        return host, outcome, reads

    together, outcome, reads = recovered(True)
    alone, expected, reads_alone = recovered(False)
    assert reads == 2 and reads_alone == 8  # one page and the empty read that ends it
    assert sorted(f.id for f in outcome.firings) == sorted(f.id for f in expected.firings)
    assert len(outcome.firings) == 2  # the third failure, replayed for the two behind
    assert outcome.deadlines == expected.deadlines
    assert outcome.evaluated == expected.evaluated
    for automation_id in ids:
        assert together.explain(automation_id) == alone.explain(automation_id)
        assert together.state(automation_id) == first.state(automation_id)
