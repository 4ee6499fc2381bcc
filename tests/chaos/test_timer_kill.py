"""SIGKILL of the timer actor while it holds a proactive deadline: Ray restarts
it empty, the daemon gives it every deadline again, and the automation still
fires once, on time or marked late."""

from __future__ import annotations

import time

import pytest

from marmot.transport.client import Client
from tests.chaos.conftest import DaemonFactory
from tests.chaos.processes import kill_pids, ray_workers, wait_for_restart
from tests.chaos.verdict import triggered_events
from tests.chaos.workload import event, eventually, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMER = "TimerHost"
WITHIN_S = 10
GRACE_S = 15.0


def test_a_killed_timer_still_fires_the_deadlines_it_held(daemons: DaemonFactory) -> None:
    daemon = daemons()
    daemon.start()
    with Client(daemon.rpc_url, timeout_s=30) as client:
        automation = client.create_automation(
            {
                "name": "chaos-timer",
                "trigger": {
                    "type": "event",
                    "posture": "Proactive",
                    "after": ["chaos.started"],
                    "expect": ["chaos.finished"],
                    "for_each": ["prefect.resource.id"],
                    "threshold": 1,
                    "within": WITHIN_S,
                },
                "actions": [{"type": "do-nothing"}],
            }
        )
        timers = {p.pid for p in ray_workers(daemon.session, TIMER)}
        assert len(timers) == 1, timers
        client.emit([event("chaos.started", "job.1")])
        wait_for(
            lambda: client.explain(automation.id).triggers[0].buckets,
            30,
            "the window to open",
        )
        time.sleep(0.5)  # the deadline's schedule call reaches the timer
        kill_pids(sorted(timers))
        restart_s = wait_for_restart(daemon.session, TIMER, timers)
        fired = eventually(lambda: triggered_events(client, automation.id), WITHIN_S + GRACE_S)
        firings = triggered_events(client, automation.id)
        print(f"\n[chaos: timer kill] timer_restart_s={restart_s:.1f} firings={len(firings)}")
        assert fired, f"no firing within {WITHIN_S + GRACE_S} s (timer back in {restart_s:.1f} s)"
        assert len(firings) == 1, firings
        labels = firings[0]["payload"]["triggering_labels"]
        assert labels == {"prefect.resource.id": "job.1"}
