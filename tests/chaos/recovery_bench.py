"""Recovery time for an event log of 1,000,000 events (issue 6): a benchmark, not a test.

Fills a data dir's event log with ``--events`` events (``Store.append_events`` in
big batches), most of them counted by one reactive ``for_each`` automation
whose threshold is never reached (so the replay evaluates every event and
fires nothing), then times ``marmot serve`` from spawn until it answers RPC,
which it does only once every automation has recovered:

- baseline: the automation's checkpoint at the end of the log (nothing to replay);
- recovery: its checkpoint at sequence 0 (the whole log is replayed).

The difference is the cost of replaying the log (Ray's start varies by a few
seconds, so it is also timed without Ray: ``AutomationHost.recover``, what the
automation actor runs, called in this process). ``explain`` afterwards checks
the replayed state (every counted event in the buckets).

    .venv/bin/python tests/chaos/recovery_bench.py [--events N] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script

import functools

from marmot.actors.automation import AutomationHost, fingerprint
from marmot.actors.store import Store
from marmot.actors.wire import Outcome, pack
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.triggers.evaluator import Evaluator
from marmot.transport.client import Client
from tests.chaos.processes import DaemonProcess
from tests.chaos.workload import reactive

RESOURCES = 1000
MATCHING_SHARE = 0.9  # of the events the automation counts; the rest it ignores
BATCH = 20_000


def fill(store: Store, count: int) -> int:
    """Append ``count`` events that occurred over the last 40 minutes, in order;
    returns how many the automation counts."""
    began = datetime.now(UTC) - timedelta(minutes=40)
    step = timedelta(minutes=40) / count
    counted = 0
    for start in range(0, count, BATCH):
        batch = []
        for n in range(start, min(start + BATCH, count)):
            is_counted = (n % 10) < MATCHING_SHARE * 10
            counted += is_counted
            when = began + n * step
            batch.append(
                Event(
                    id=uuid4(),
                    occurred=when,
                    received=when,
                    event="bench.counted" if is_counted else "bench.ignored",
                    resource={"prefect.resource.id": f"bench.resource.{n % RESOURCES}"},
                    payload={"n": n},
                )
            )
        store.events.append(batch)
    return counted


def set_checkpoint(db: Path, automation_id: UUID, seq: int) -> None:
    """An empty-state checkpoint of the automation as of ``seq``, as its actor
    would write it (the fingerprint of the document the daemon sends it)."""
    with Store.open(db) as store:
        automation = store.automations.read(automation_id).automation
        document = automation.model_dump_json()
        state = {"fingerprint": fingerprint(document), "state": Evaluator(automation).snapshot()}
        store.checkpoints.save(str(automation_id), seq, pack(state))


def recover_in_process(db: Path, automation_id: UUID) -> tuple[float, int]:
    """Seconds ``AutomationHost.recover`` takes here, and the events it replayed."""
    with Store.open(db) as store:
        document = store.automations.read(automation_id).automation.model_dump_json()
    host = AutomationHost(functools.partial(Store.open, db))
    began = time.monotonic()
    outcome = Outcome.unpack(host.recover(document, time.time_ns() // 1000))
    return time.monotonic() - began, outcome.evaluated


def counted_in_buckets(daemon: DaemonProcess, automation_id: UUID) -> int:
    with Client(daemon.rpc_url, timeout_s=120) as client:
        buckets = client.explain(automation_id).triggers[0].buckets
    return sum(b.count for b in buckets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="marmot-recovery-"))
    db = work / "data" / "marmot.db"
    automation = Automation.model_validate(
        {
            "id": str(uuid4()),
            **reactive(
                "bench-recovery",
                ["bench.counted"],
                ["prefect.resource.id"],
                threshold=10_000_000,  # never reached: every event counts, none fires
                within=3600,
            ),
        }
    )
    daemon = DaemonProcess(work / "data", {"data.checkpoint_interval_s": 3600.0})
    try:
        began = time.monotonic()
        with Store.open(db) as store:
            store.automations.create(automation)
            counted = fill(store, args.events)
            last = store.events.last_seq()
            store.db.wal_checkpoint()
        fill_s = time.monotonic() - began
        size_mb = sum(p.stat().st_size for p in db.parent.glob("marmot.db*")) / 1e6
        print(
            f"log: {last:,} events ({counted:,} counted by the automation) in {fill_s:.1f} s, "
            f"{size_mb:.0f} MB"
        )

        set_checkpoint(db, automation.id, 0)
        in_process_s, replayed = recover_in_process(db, automation.id)
        print(
            f"AutomationHost.recover in process: {replayed:,} events replayed in "
            f"{in_process_s:.1f} s ({replayed / in_process_s:,.0f} events/s)"
        )

        set_checkpoint(db, automation.id, last)
        baseline_s = daemon.start(timeout_s=900)
        baseline_count = counted_in_buckets(daemon, automation.id)
        daemon.kill()
        print(f"start, checkpoint at the end of the log (nothing to replay): {baseline_s:.1f} s")

        set_checkpoint(db, automation.id, 0)
        recovery_s = daemon.start(timeout_s=900)
        recovered = counted_in_buckets(daemon, automation.id)
        daemon.kill()
        replay_s = recovery_s - baseline_s
        print(f"start, checkpoint at sequence 0 (replays {last:,} events): {recovery_s:.1f} s")
        print(
            f"replay of the log: ~{replay_s:.1f} s (~{last / max(replay_s, 1e-9):,.0f} events/s); "
            f"buckets hold {recovered:,} counted events (expected {counted:,}; "
            f"baseline {baseline_count:,})"
        )
        return 0 if recovered == counted and baseline_count == 0 else 1
    finally:
        strays = daemon.cleanup()
        if strays:
            print(f"killed processes that outlived the daemon: {strays}")
        if args.keep:
            print(f"data dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
