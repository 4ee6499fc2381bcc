"""Bucket state survives an actor crash and a daemon restart (checkpoint + log replay).

Each test runs daemons of its own on the session Ray, in a namespace of their
own, over one data folder.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import ray
import ray._private.state

from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, event_doc, make_config, reactive_doc, wait_for

pytestmark = pytest.mark.integration

TRIGGERED = "prefect.automation.triggered"


@contextlib.contextmanager
def _daemon(data_dir: Path) -> Iterator[tuple[DaemonThread, Client, str]]:
    namespace = f"marmot-test-{uuid4().hex[:8]}"
    running = DaemonThread(make_config(data_dir, **{"ray.namespace": namespace})).start()
    try:
        with Client(running.rpc_url, timeout_s=30) as client:
            yield running, client, namespace
    finally:
        running.stop()


def _firings(client: Client, automation_id: UUID) -> list[dict[str, Any]]:
    return client.filter_events(
        names=[TRIGGERED], resource_id=f"prefect.automation.{automation_id}", limit=100
    )


def test_bucket_state_survives_an_automation_actor_crash(ray_session: None, tmp_path: Path) -> None:
    with _daemon(tmp_path) as (_, client, namespace):
        automation = client.create_automation(
            reactive_doc("three in a row", "test.recovery.crash", threshold=3)
        )
        client.emit([event_doc("test.recovery.crash", "job.1") for _ in range(2)])
        wait_for(
            lambda: client.explain(automation.id).triggers[0].buckets,
            what="the two events to be counted",
        )
        actor = ray.get_actor(f"automation-{automation.id}", namespace=namespace)
        actor_id = actor._actor_id.hex()
        ray.kill(actor, no_restart=False)  # a crash: Ray restarts it empty

        def restarted() -> bool:
            info = ray._private.state.actors(actor_id)
            return info["NumRestarts"] >= 1 and info["State"] == "ALIVE"

        wait_for(restarted, what="Ray to restart the actor")
        # The third event makes three only if the first two were recovered.
        client.emit([event_doc("test.recovery.crash", "job.1")])
        wait_for(lambda: _firings(client, automation.id), what="the firing after the crash")
        assert len(_firings(client, automation.id)) == 1


def test_bucket_state_survives_a_daemon_restart(ray_session: None, tmp_path: Path) -> None:
    with _daemon(tmp_path) as (_, client, _ns):
        automation = client.create_automation(
            reactive_doc("three across a restart", "test.recovery.restart", threshold=3)
        )
        client.emit([event_doc("test.recovery.restart", "job.7") for _ in range(2)])
        wait_for(
            lambda: client.explain(automation.id).triggers[0].buckets,
            what="the two events to be counted",
        )
    with _daemon(tmp_path) as (_, client, _ns):
        (bucket,) = client.explain(automation.id).triggers[0].buckets
        assert bucket.count == 2
        client.emit([event_doc("test.recovery.restart", "job.7")])
        wait_for(lambda: _firings(client, automation.id), what="the firing after the restart")
        assert len(_firings(client, automation.id)) == 1


def test_a_proactive_deadline_that_passed_while_down_fires_on_recovery(
    ray_session: None, tmp_path: Path
) -> None:
    within = 10
    with _daemon(tmp_path) as (_, client, _ns):
        automation = client.create_automation(
            {
                "name": "must finish",
                "trigger": {
                    "type": "event",
                    "posture": "Proactive",
                    "after": ["test.recovery.started"],
                    "expect": ["test.recovery.finished"],
                    "for_each": ["prefect.resource.id"],
                    "within": within,
                },
            }
        )
        started = datetime.now(UTC)
        client.emit([event_doc("test.recovery.started", "job.9")])
        wait_for(
            lambda: client.explain(automation.id).triggers[0].buckets,
            what="the window to open",
        )
    # Down past the deadline.
    wait_for(
        lambda: (datetime.now(UTC) - started).total_seconds() > within + 0.5,
        timeout_s=within + 5,
        what="the deadline to pass while the daemon is down",
    )
    with _daemon(tmp_path) as (_, client, _ns):
        fired = wait_for(lambda: _firings(client, automation.id), what="the late firing")
        assert len(fired) == 1
        assert fired[0]["payload"]["triggering_labels"] == {"prefect.resource.id": "job.9"}
        assert time.time() > started.timestamp() + within
        # Marked late: by at least the time the daemon was down past the deadline.
        assert fired[0]["payload"]["late_by_seconds"] >= 0.5
