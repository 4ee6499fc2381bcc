"""Kill -9 of the whole daemon (its embedded Ray included) at random points while
a publisher sends acknowledged events; after restarts on the same data dir,
every firing and every webhook delivery is compared with ``marmot replay`` over
exactly the events the log holds."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from tests.chaos import scenario
from tests.chaos.conftest import DaemonFactory
from tests.chaos.workload import Publisher, WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 6006
EVENTS = 1600
KILLS = 3


def test_kill_9_of_the_daemon_loses_no_event_and_changes_no_firing(
    daemons: DaemonFactory, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    daemon = daemons()
    recoveries: list[float] = []

    def kill_and_restart(publisher: Publisher) -> None:
        for _ in range(KILLS):
            if publisher.finished.wait(rng.uniform(0.5, 2.5)):
                return
            daemon.kill()
            recoveries.append(daemon.start())

    outcome = scenario.run(daemon, receiver, tmp_path, rng, EVENTS, kill_and_restart)
    verdict = outcome.verdict
    figures = (
        f"runs={daemon.lives} kills={daemon.kills} {outcome.figures()} "
        f"restart_to_serving_s(mean/max)={statistics.fmean(recoveries or [0]):.1f}/"
        f"{max(recoveries or [0]):.1f} first_start_s={daemon.startup_s[0]:.1f}"
    )
    print(f"\n[chaos: daemon kill -9] {figures}")
    assert daemon.kills == KILLS, f"the publisher finished before every kill; {figures}"
    # Every acknowledged event is in the log, once.
    assert outcome.publisher.acknowledged == EVENTS, figures
    assert verdict.events == EVENTS, figures
    # Firings: exactly replay's, none lost, none extra.
    assert verdict.firing_mismatches == 0, f"{figures}; {verdict.details()}"
    # Deliveries: exactly replay's. An action claimed, or a firing logged but
    # not claimed, when the daemon died is carried out after the restart
    # (test_restart_faults.py checks each case on its own).
    assert not verdict.duplicated_deliveries, f"{figures}; {verdict.details()}"
    assert not verdict.unexpected_deliveries, f"{figures}; {verdict.details()}"
    assert not verdict.lost_deliveries, f"{figures}; {verdict.details()}"
