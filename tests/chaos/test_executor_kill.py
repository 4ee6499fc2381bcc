"""SIGKILL of the whole executor pool (every ``ExecutorHost`` worker) while
webhooks are being delivered to a slow receiver: firings are unaffected and
every delivery arrives, none twice. An action claimed by an executor that
died is carried out by its successor, and an execute call that failed because
its executor died is sent again (test_process_faults.py checks each case on
its own)."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from tests.chaos import scenario
from tests.chaos.conftest import DaemonFactory
from tests.chaos.processes import kill_pids, ray_workers, wait_for_restart
from tests.chaos.workload import Publisher, WebhookReceiver, eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 6008
EVENTS = 2400
KILLS = 3
ACTOR = "ExecutorHost"


def test_killing_the_executor_pool_mid_delivery_duplicates_nothing(
    daemons: DaemonFactory, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    daemon = daemons()
    receiver = WebhookReceiver(delay_s=0.3)  # keeps deliveries in flight
    restarts: list[float] = []
    in_flight_at_kill: list[int] = []

    def kill_pool(publisher: Publisher) -> None:
        for _ in range(KILLS):
            if publisher.finished.wait(rng.uniform(0.3, 1.0)):
                return
            # Mid-delivery: a webhook request is being answered (slowly) right now.
            eventually(lambda: receiver.in_flight > 0, 5.0)
            workers = sorted(p.pid for p in ray_workers(daemon.session, ACTOR))
            assert len(workers) == 2, f"expected the pool of two executors: {workers}"
            in_flight_at_kill.append(receiver.in_flight)
            kill_pids(workers)
            restarts.append(wait_for_restart(daemon.session, ACTOR, set(workers)))

    try:
        outcome = scenario.run(daemon, receiver, tmp_path, rng, EVENTS, kill_pool, rate_per_s=120.0)
    finally:
        receiver.close()
    verdict = outcome.verdict
    figures = (
        f"runs=1 pool_kills={len(restarts)} deliveries_in_flight_at_kills={in_flight_at_kill} "
        f"{outcome.figures()} executor_restart_s(mean/max)="
        f"{statistics.fmean(restarts or [0]):.1f}/{max(restarts or [0]):.1f}"
    )
    print(f"\n[chaos: executor pool kill] {figures}")
    assert len(restarts) == KILLS, f"the publisher finished before every kill; {figures}"
    assert outcome.publisher.acknowledged == EVENTS, figures
    assert verdict.events == EVENTS, figures
    assert verdict.firing_mismatches == 0, f"{figures}; {verdict.details()}"
    assert not verdict.duplicated_deliveries, f"{figures}; {verdict.details()}"
    assert not verdict.unexpected_deliveries, f"{figures}; {verdict.details()}"
    assert not verdict.lost_deliveries, f"{figures}; {verdict.details()}"
