"""What a SIGKILL of single Ray workers (executors, an automation actor) leaves
behind while the daemon keeps running.

One run (a module fixture) sets up three situations, then SIGKILLs the
workers at once and gives the daemon time to recover:

- a webhook action claimed by an executor that was waiting to retry it;
- firings sent to executors that were stopped (SIGSTOP) and then killed, so
  the ``execute`` call was in flight when they died;
- an event sent to an automation actor that was stopped and then killed, so
  the ``apply`` call carrying it was in flight when it died.

At the end, ``marmot admin checkpoint`` is asked to checkpoint every automation,
one of which never saw an event.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from marmot.transport.client import Client
from tests.chaos.conftest import FaultUnhandled, managed_daemons
from tests.chaos.processes import kill_pids, ray_workers, wait_for_restart
from tests.chaos.verdict import (
    action_status_by_firing,
    checkpoint_seq,
    counted,
    triggered_events,
)
from tests.chaos.workload import (
    Delivery,
    WebhookReceiver,
    event,
    eventually,
    reactive,
    wait_for,
    webhook_action,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# How long the daemon gets to carry out what the killed workers held.
GRACE_S = 6.0
# Time for the daemon's Ray core worker to push a submitted call to a stopped
# worker (there is no signal to wait on: the call sits in the worker's socket).
PUSH_S = 0.5


@dataclass
class AfterKills:
    """What the daemon did after the workers were killed."""

    claimed_requests: list[Delivery]
    in_flight_deliveries: list[Delivery]
    actor_firings: list[dict[str, Any]]
    executor_restart_s: float
    actor_restart_s: float
    idle_checkpoint_seq: int | None
    last_seq_at_checkpoint: int


@pytest.fixture(scope="module")
def after_kills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AfterKills]:
    receiver = WebhookReceiver()
    receiver.script("/claimed", 503)  # the first attempt fails, a retry is due
    with managed_daemons(tmp_path_factory.mktemp("kills")) as make:
        # A long backoff: the retry is still waiting when the executor dies.
        daemon = make(**{"executors.backoff_base_s": 20.0, "executors.backoff_max_s": 20.0})
        daemon.start()
        session = daemon.session
        with Client(daemon.rpc_url, timeout_s=30) as client:
            idle = client.create_automation(
                reactive("chaos-idle", ["chaos.never"], ["prefect.resource.id"], 2, 60)
            )
            claimed = client.create_automation(
                reactive(
                    "chaos-exec-claimed",
                    ["chaos.exec.claimed"],
                    ["prefect.resource.id"],
                    1,
                    0,
                    [webhook_action(client, receiver, "/claimed")],
                )
            )
            in_flight = client.create_automation(
                reactive(
                    "chaos-exec-in-flight",
                    ["chaos.exec.in-flight"],
                    ["prefect.resource.id"],
                    1,
                    0,
                    [webhook_action(client, receiver, "/in-flight")],
                )
            )
            before = {p.pid for p in ray_workers(session, "AutomationHost")}
            counting = client.create_automation(
                reactive("chaos-actor-three", ["chaos.actor"], ["prefect.resource.id"], 3, 3600)
            )
            (actor,) = {p.pid for p in ray_workers(session, "AutomationHost")} - before
            client.emit([event("chaos.actor", "r.1") for _ in range(2)])
            wait_for(lambda: counted(client, counting.id) == 2, 30, "two events counted")
            client.emit([event("chaos.exec.claimed", "r.1")])
            wait_for(lambda: receiver.on("/claimed"), 30, "the first (503) attempt")

            executors = {p.pid for p in ray_workers(session, "ExecutorHost")}
            kill_pids([actor, *executors], signal.SIGSTOP)
            # The third event for the stopped actor, and a firing for the stopped executors.
            client.emit([event("chaos.actor", "r.1"), event("chaos.exec.in-flight", "r.1")])
            wait_for(lambda: triggered_events(client, in_flight.id), 30, "the firing to be logged")
            wait_for(lambda: client.status()["queued_events"] == 0, 30, "the events sent")
            time.sleep(PUSH_S)
            status = action_status_by_firing(daemon.db_path)
            assert list(status.values()) == ["claimed"], status  # only the waiting retry

            kill_pids([actor, *executors])
            killed_at = time.monotonic()
            wait_for_restart(session, "ExecutorHost", executors)
            executor_restart_s = time.monotonic() - killed_at
            wait_for_restart(session, "AutomationHost", before | {actor})
            actor_restart_s = time.monotonic() - killed_at
            eventually(
                lambda: (
                    len(receiver.on("/claimed")) > 1
                    and receiver.on("/in-flight")
                    and triggered_events(client, counting.id)
                ),
                GRACE_S,
            )
            actor_firings = triggered_events(client, counting.id)
            assert len(triggered_events(client, claimed.id)) == 1
            last_seq = int(client.filter_events(limit=1, by_arrival=True)[0]["seq"])
            client.checkpoint()  # marmot admin checkpoint
        daemon.kill()
        idle_seq = checkpoint_seq(daemon.db_path, str(idle.id))
        receiver.close()
        yield AfterKills(
            claimed_requests=receiver.on("/claimed"),
            in_flight_deliveries=receiver.on("/in-flight"),
            actor_firings=actor_firings,
            executor_restart_s=executor_restart_s,
            actor_restart_s=actor_restart_s,
            idle_checkpoint_seq=idle_seq,
            last_seq_at_checkpoint=last_seq,
        )


def test_an_action_claimed_by_a_killed_executor_is_carried_out(after_kills: AfterKills) -> None:
    attempts = after_kills.claimed_requests
    if len(attempts) < 2:
        raise FaultUnhandled(
            f"{len(attempts)} attempt(s) in all, none within {GRACE_S} s of the kill "
            f"(executors back after {after_kills.executor_restart_s:.1f} s)"
        )


def test_firings_sent_to_an_executor_that_dies_are_acted_on(after_kills: AfterKills) -> None:
    if not after_kills.in_flight_deliveries:
        raise FaultUnhandled(
            f"no delivery within {GRACE_S} s of the kill "
            f"(executors back after {after_kills.executor_restart_s:.1f} s)"
        )


def test_an_event_in_flight_to_a_killed_automation_actor_is_evaluated(
    after_kills: AfterKills,
) -> None:
    if not after_kills.actor_firings:
        raise FaultUnhandled(
            f"no firing within {GRACE_S} s of the kill on the third of three events "
            f"(actor back after {after_kills.actor_restart_s:.1f} s)"
        )


def test_admin_checkpoint_moves_an_idle_automations_checkpoint_to_the_log_end(
    after_kills: AfterKills,
) -> None:
    seq, last = after_kills.idle_checkpoint_seq, after_kills.last_seq_at_checkpoint
    assert seq is not None, "the idle automation has no checkpoint"
    if seq < last:
        raise FaultUnhandled(
            f"after admin checkpoint, the idle automation's checkpoint is at seq {seq}; "
            f"the log ends at {last}: {last - seq} events pinned for its replay"
        )
