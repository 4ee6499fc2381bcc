"""SIGKILL of single automation actors (their Ray worker processes) while a
publisher sends acknowledged events: Ray restarts each actor empty, it
recovers from its checkpoint and the log, and every firing and webhook
delivery still matches ``marmot replay`` over the events in the log."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from tests.chaos import scenario
from tests.chaos.conftest import DaemonFactory
from tests.chaos.processes import kill_pids, ray_workers, wait_for_restart
from tests.chaos.workload import Publisher, WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 6007
EVENTS = 2400
KILLS = 3
ACTOR = "AutomationHost"


def test_killed_automation_actors_recover_their_buckets(
    daemons: DaemonFactory, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    daemon = daemons()
    restarts: list[float] = []

    def kill_actors(publisher: Publisher) -> None:
        for _ in range(KILLS):
            if publisher.finished.wait(rng.uniform(0.5, 2.0)):
                return
            workers = sorted(p.pid for p in ray_workers(daemon.session, ACTOR))
            assert len(workers) == 3, f"expected one worker per automation: {workers}"
            victim = rng.choice(workers)
            kill_pids([victim])
            restarts.append(wait_for_restart(daemon.session, ACTOR, set(workers)))

    outcome = scenario.run(
        daemon, receiver, tmp_path, rng, EVENTS, kill_actors, rate_per_s=120.0, tail_events=240
    )
    verdict = outcome.verdict
    figures = (
        f"runs=1 actor_kills={len(restarts)} {outcome.figures()} "
        f"actor_restart_s(mean/max)={statistics.fmean(restarts or [0]):.1f}/"
        f"{max(restarts or [0]):.1f}"
    )
    print(f"\n[chaos: automation actor kill] {figures}")
    assert len(restarts) == KILLS, f"the publisher finished before every kill; {figures}"
    assert outcome.publisher.acknowledged == EVENTS, figures
    assert verdict.events == EVENTS, figures
    assert verdict.mismatches == 0, f"{figures}; {verdict.details()}"
