"""One fault-test run: a daemon with the standard automations, a publisher
sending acknowledged events while faults are injected, then the verdict."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from marmot.transport.client import Client
from tests.chaos.processes import DaemonProcess
from tests.chaos.verdict import Verdict, judge, read_automations, read_log, replay, settle
from tests.chaos.workload import Publisher, WebhookReceiver, make_events, standard_automations

WEBHOOK_AUTOMATIONS = {"chaos-webhook-two-pongs"}
HOOK_PATH = "/hook"


@dataclass
class Outcome:
    """What a run produced."""

    verdict: Verdict
    publisher: Publisher
    settle_s: float
    torn_requests: int

    def figures(self) -> str:
        p = self.publisher
        return (
            f"acknowledged={p.acknowledged} emit_retries={p.retries} "
            f"publisher_max_outage_s={p.max_gap_s:.1f} {self.verdict.summary()} "
            f"torn_requests={self.torn_requests} settle_s={self.settle_s:.1f}"
        )


def run(
    daemon: DaemonProcess,
    receiver: WebhookReceiver,
    workdir: Path,
    rng: random.Random,
    events: int,
    inject: Callable[[Publisher], None],
    *,
    rate_per_s: float = 150.0,
    tail_events: int = 0,
) -> Outcome:
    """Start ``daemon``, create the automations, publish ``events`` events while
    ``inject`` runs (it gets the publisher and returns when its faults are done),
    wait for the daemon to settle, kill it and judge the data dir.

    At least ``tail_events`` events must still be unsent when ``inject`` returns:
    a restarted actor recovers only when later events reach it
    (test_process_faults.py), and the run judges recovery, not that fault."""
    daemon.start()
    with Client(daemon.rpc_url, timeout_s=30) as client:
        for document in standard_automations(client, receiver):
            client.create_automation(document)
    publisher = Publisher(daemon.rpc_url, make_events(rng, events), rate_per_s=rate_per_s)
    publisher.start()
    try:
        inject(publisher)
        left = events - publisher.acknowledged
        assert left >= tail_events, f"only {left} events left to send after the faults"
        publisher.join(180)
    finally:
        publisher.stop()
    expected = replay(workdir, read_automations(daemon.db_path), read_log(daemon.db_path))
    settle_s = settle(daemon.db_path, len(expected), lambda: len(receiver.on(HOOK_PATH)))
    daemon.kill()  # not SIGTERM, which exits with code 15: see test_shutdown.py
    daemon.kills -= 1  # the end of the run, not a fault
    verdict = judge(daemon.db_path, workdir, receiver.on(HOOK_PATH), WEBHOOK_AUTOMATIONS)
    return Outcome(verdict, publisher, settle_s, receiver.torn)
