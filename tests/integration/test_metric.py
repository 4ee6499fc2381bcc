"""A metric trigger in the daemon: real Ray, ZeroMQ and SQLite.

Flow-run events that happened minutes ago arrive at once: the automation's
actor evaluates them in time order and catches up to the newest one, so the
breach that lasted ``firing_for`` in the past fires now, without waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, wait_for

pytestmark = pytest.mark.integration


def _run_event(state: str, run: str, deployment: str, ago_s: float) -> dict[str, Any]:
    return {
        "id": str(uuid4()),
        "occurred": (datetime.now(UTC) - timedelta(seconds=ago_s)).isoformat(),
        "event": f"prefect.flow-run.{state}",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run}"},
        "related": [
            {
                "prefect.resource.id": f"prefect.deployment.{deployment}",
                "prefect.resource.role": "deployment",
            }
        ],
    }


def test_a_metric_trigger_fires_on_flow_run_durations(daemon: DaemonThread) -> None:
    deployment = uuid4().hex
    with Client(daemon.rpc_url, timeout_s=30) as client:
        automation = client.create_automation(
            {
                "name": f"slow runs {deployment[:8]}",
                "trigger": {
                    "posture": "Metric",
                    "match_related": {"prefect.resource.id": f"prefect.deployment.{deployment}"},
                    "metric": {
                        "name": "duration",
                        "operator": ">",
                        "threshold": 60,
                        "range": 600,
                        "firing_for": 300,
                    },
                },
                "actions": [{"type": "do-nothing"}],
            }
        )
        # Runs of 200 s ended 700 and 300 s ago: the mean duration breaches
        # from 700 s ago, so the trigger was due to fire 400 s ago, on the last
        # event before that (r2 starting). The next event it sees (r2 ending,
        # 300 s ago) moves its clock past that: it fires then, marked 100 s
        # late (lateness is measured on the clock the firing was evaluated at).
        # r2 is still in the 600 s window: still breaching.
        last_before = _run_event("Running", "r2", deployment, 500)
        client.emit(
            [
                _run_event("Running", "r1", deployment, 900),
                _run_event("Completed", "r1", deployment, 700),
                last_before,
                _run_event("Completed", "r2", deployment, 300),
                _run_event("Pending", "r3", deployment, 1),
                # Another deployment's run is not this trigger's business.
                _run_event("Running", "x1", uuid4().hex, 500),
            ]
        )
        resource = f"prefect.automation.{automation.id}"
        [fired] = wait_for(
            lambda: [
                e
                for e in client.filter_events(names=["prefect.automation.triggered"], limit=1000)
                if e["resource"]["prefect.resource.id"] == resource
            ],
            what="the metric trigger to fire",
        )
        assert fired["resource"]["prefect.posture"] == "Metric"
        assert fired["payload"]["triggering_labels"] == {}
        assert fired["payload"]["triggering_event"]["id"] == last_before["id"]
        assert fired["payload"]["late_by_seconds"] == pytest.approx(100, abs=30)
        [metric] = [t for t in client.explain(automation.id).triggers if t.type == "metric"]
        assert metric.metric is not None and metric.metric.state == "fired"
        assert metric.metric.value == pytest.approx(200.0, abs=0.1)  # the events were stamped apart
