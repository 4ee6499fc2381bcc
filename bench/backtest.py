"""Backtest benchmark: events/s of ``marmot backtest`` over a daemon's event log.

    .venv/bin/python bench/backtest.py [--events N]

Fills a fresh store's event log with N events (default 1,000,000: flow-run
states on 1,000 runs, 10 ms apart, received as they occurred), then runs the
backtest's own body (``actors.backtests.backtest_in_log``, what the daemon's
Ray task runs) with a counting automation, a Proactive one and a compared
live automation, and prints events/s read and replayed, by the wall clock and
per second of the process's CPU time (the figure a shared machine distorts
least). Not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from marmot.actors.backtests import backtest_in_log
from marmot.actors.store import Store
from marmot.engine.models.automations import Automation
from marmot.engine.models.backtest import BacktestReport
from marmot.engine.models.events import trusted_event
from marmot.engine.timestamps import to_us

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAMES = [
    "prefect.flow-run.Pending",
    "prefect.flow-run.Running",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.task-run.Completed",
]
AUTOMATIONS = [
    {
        "name": "failures per run",
        "trigger": {
            "expect": ["prefect.flow-run.Failed"],
            "for_each": ["prefect.resource.id"],
            "threshold": 2,
            "within": 60,
        },
        "actions": [{"type": "do-nothing"}],
    },
    {
        "name": "stuck in Running",
        "trigger": {
            "posture": "Proactive",
            "after": ["prefect.flow-run.Running"],
            "expect": ["prefect.flow-run.Completed", "prefect.flow-run.Failed"],
            "for_each": ["prefect.resource.id"],
            "within": 30,
        },
        "actions": [{"type": "do-nothing"}],
    },
]


def fill(store: Store, count: int) -> float:
    """Append ``count`` events; returns the seconds it took."""
    started = time.perf_counter()
    batch = []
    for i in range(count):
        occurred = START + timedelta(milliseconds=10 * i)
        resource = {"prefect.resource.id": f"prefect.flow-run.{i % 1000}"}
        name = NAMES[i % len(NAMES)]
        batch.append(trusted_event(uuid4(), occurred, name, resource, [], {}, None, occurred))
        if len(batch) == 10_000:
            store.events.append(batch)
            batch = []
    if batch:
        store.events.append(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "marmot.db"
        with Store.open(path) as store:
            took = fill(store, args.events)
            live = store.automations.create(Automation.model_validate(AUTOMATIONS[0]))
        print(f"log filled: {args.events:,} events in {took:.1f} s")
        for documents, compare in [
            ([AUTOMATIONS[0]], None),
            (AUTOMATIONS, str(live.automation.id)),
        ]:
            automations = [Automation.model_validate(d).model_dump_json() for d in documents]
            until = to_us(START + timedelta(milliseconds=10 * args.events, minutes=5))
            started, cpu = time.perf_counter(), time.process_time()
            report = None
            for item in backtest_in_log(str(path), automations, None, until, compare, False):
                if isinstance(item, BacktestReport):
                    report = item
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            assert report is not None
            names = ", ".join(d["name"] for d in documents)
            print(
                f"backtest [{names}]{' --compare' if compare else ''}: {report.events:,} events "
                f"in {elapsed:.2f} s = {report.events / elapsed:,.0f} events/s "
                f"({report.events / cpu:,.0f} per CPU second), {report.firings_total:,} firings"
            )


if __name__ == "__main__":
    main()
