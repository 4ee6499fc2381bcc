"""What a kill -9 of the daemon leaves behind, checked after one restart, and
how the restarted daemon stops on SIGTERM.

One run (a module fixture) sets up four situations in the first life, kills the
daemon with its embedded Ray, waits until a proactive deadline has passed,
and restarts it on the same data dir with another hash seed (periodic
checkpoints are off, so recovery replays the log from each automation's
creation, and only a checkpoint at shutdown can move them):

- a proactive deadline that passed while the daemon was down (must fire once);
- an automation with two names in ``expect`` (a set) that had counted events;
- a webhook action claimed by an executor that was waiting to retry it;
- a firing whose ``automation.triggered`` event was logged while its actions had
  not reached an executor yet (executors stopped with SIGSTOP).

The second life ends with SIGTERM, as systemd, Docker and Kubernetes stop a
service.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from marmot.transport.client import Client
from tests.chaos.conftest import FaultUnhandled, managed_daemons
from tests.chaos.processes import kill_pids, ray_workers
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

WITHIN_S = 10
# How long the restarted daemon gets to carry out what the first life left.
GRACE_S = 6.0
TWO_NAMES = reactive(
    "chaos-two-names", ["chaos.fp.a", "chaos.fp.b"], ["prefect.resource.id"], 3, 3600
)


def _dump(document: dict[str, Any], seed: str) -> str:
    """The automation as ``Automation.model_dump_json`` writes it under a hash seed."""
    code = (
        "import json, sys\n"
        "from marmot.engine.models.automations import Automation\n"
        "print(Automation.model_validate(json.loads(sys.argv[1])).model_dump_json())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(document)],
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def hash_seeds_that_reorder(document: dict[str, Any]) -> tuple[str, str]:
    """Two PYTHONHASHSEED values under which set iteration differs; the automation
    must serialize the same under both (its sets are written sorted)."""
    first, second = "0", "1"
    stored = _dump(document, first)
    assert _dump(json.loads(stored), second) == stored, "documents differ by hash seed"
    return first, second


@dataclass
class AfterRestart:
    """What the restarted daemon did with each situation."""

    deadline: datetime
    restarted_at: datetime
    late_firings: list[dict[str, Any]]
    late_deliveries: list[Delivery]
    late_expected: set[str]
    two_names_count_before: int
    two_names_count_after: int
    hash_seeds: tuple[str, str]
    claimed_requests: list[Delivery]
    unclaimed_deliveries: list[Delivery]
    startup_s: float
    checkpoint_before_sigterm: int | None
    checkpoint_after_sigterm: int | None
    sigterm_exit_code: int
    log_path: str


@pytest.fixture(scope="module")
def after_restart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AfterRestart]:
    seeds = hash_seeds_that_reorder(TWO_NAMES)
    receiver = WebhookReceiver()
    receiver.script("/claimed", 503)  # the first attempt fails, a retry is due
    with managed_daemons(tmp_path_factory.mktemp("restart")) as make:
        # A long backoff: the retry is still waiting when the daemon dies.
        daemon = make(
            **{
                "executors.backoff_base_s": 20.0,
                "executors.backoff_max_s": 20.0,
                "data.checkpoint_interval_s": 3600.0,
            }
        )
        daemon.hash_seed = seeds[0]
        daemon.start()
        with Client(daemon.rpc_url, timeout_s=30) as client:
            late = client.create_automation(
                {
                    "name": "chaos-late-deadline",
                    "trigger": {
                        "type": "event",
                        "posture": "Proactive",
                        "after": ["chaos.job.started"],
                        "expect": ["chaos.job.finished"],
                        "for_each": ["prefect.resource.id"],
                        "threshold": 1,
                        "within": WITHIN_S,
                    },
                    "actions": [webhook_action(client, receiver, "/late")],
                }
            )
            started = [event("chaos.job.started", f"job.{n}") for n in (1, 2, 3)]
            client.emit([*started, event("chaos.job.finished", "job.2")])
            deadline = max(datetime.fromisoformat(e["occurred"]) for e in started) + timedelta(
                seconds=WITHIN_S
            )
            two_names = client.create_automation(TWO_NAMES)
            claimed = client.create_automation(
                reactive(
                    "chaos-claimed",
                    ["chaos.claimed"],
                    ["prefect.resource.id"],
                    1,
                    0,
                    [webhook_action(client, receiver, "/claimed")],
                )
            )
            unclaimed = client.create_automation(
                reactive(
                    "chaos-unclaimed",
                    ["chaos.unclaimed"],
                    ["prefect.resource.id"],
                    1,
                    0,
                    [webhook_action(client, receiver, "/unclaimed")],
                )
            )
            client.emit([event("chaos.fp.a", "r.1"), event("chaos.fp.b", "r.1")])
            wait_for(lambda: counted(client, two_names.id) == 2, 30, "two events counted")
            client.emit([event("chaos.claimed", "r.1")])
            wait_for(lambda: receiver.on("/claimed"), 30, "the first (503) attempt")
            executors = [p.pid for p in ray_workers(daemon.session, "ExecutorHost")]
            kill_pids(executors, signal.SIGSTOP)  # from now on no action reaches an executor
            client.emit([event("chaos.unclaimed", "r.1")])
            wait_for(lambda: triggered_events(client, unclaimed.id), 30, "the firing to be logged")
            assert not triggered_events(client, late.id), "the proactive automation fired too early"
        daemon.kill()
        # As intended before the restart: one action in the log (the webhook
        # claimed, attempted once), and no action of the other firing.
        status = action_status_by_firing(daemon.db_path)
        assert list(status.values()) == ["claimed"], status
        checkpoint_at_kill = checkpoint_seq(daemon.db_path, str(claimed.id))
        assert len(receiver.on("/claimed")) == 1
        assert not receiver.on("/unclaimed")
        wait_for(lambda: datetime.now(UTC) > deadline + timedelta(seconds=0.5), 30, "deadline")

        daemon.hash_seed = seeds[1]
        startup_s = daemon.start()
        restarted_at = datetime.now(UTC)
        with Client(daemon.rpc_url, timeout_s=30) as client:
            count_after = counted(client, two_names.id)
            eventually(
                lambda: (
                    len(receiver.on("/late")) >= 2
                    and len(receiver.on("/claimed")) > 1
                    and receiver.on("/unclaimed")
                ),
                GRACE_S,
            )
            late_firings = triggered_events(client, late.id)
            unclaimed_firings = triggered_events(client, unclaimed.id)
            claimed_firings = triggered_events(client, claimed.id)
        assert len(unclaimed_firings) == 1 and len(claimed_firings) == 1
        # No periodic checkpoint: the one from the automation's creation is still there.
        assert checkpoint_seq(daemon.db_path, str(claimed.id)) == checkpoint_at_kill
        exit_code = daemon.stop()  # SIGTERM
        receiver.close()
        yield AfterRestart(
            deadline=deadline,
            restarted_at=restarted_at,
            late_firings=late_firings,
            late_deliveries=receiver.on("/late"),
            late_expected={
                e["id"] for e in started if e["resource"]["prefect.resource.id"] != "job.2"
            },
            two_names_count_before=2,
            two_names_count_after=count_after,
            hash_seeds=seeds,
            claimed_requests=receiver.on("/claimed"),
            unclaimed_deliveries=receiver.on("/unclaimed"),
            startup_s=startup_s,
            checkpoint_before_sigterm=checkpoint_at_kill,
            checkpoint_after_sigterm=checkpoint_seq(daemon.db_path, str(claimed.id)),
            sigterm_exit_code=exit_code,
            log_path=str(daemon.log_path),
        )


def test_a_proactive_deadline_that_passed_while_killed_fires_once_on_restart(
    after_restart: AfterRestart,
) -> None:
    r = after_restart
    fired_on = sorted(f["payload"]["triggering_event"]["id"] for f in r.late_firings)
    delivered = sorted(d.key()[1] for d in r.late_deliveries)
    figures = (
        f"deadline={r.deadline.isoformat()} restarted_at={r.restarted_at.isoformat()} "
        f"restart_to_serving_s={r.startup_s:.1f} firings={len(fired_on)} "
        f"deliveries={len(delivered)}"
    )
    print(f"\n[chaos: proactive deadline passed while down] {figures}")
    assert r.deadline < r.restarted_at, figures
    assert fired_on == sorted(r.late_expected), figures
    assert delivered == sorted(r.late_expected), figures
    for firing in r.late_firings:
        assert datetime.fromisoformat(firing["occurred"]) > r.deadline, figures
        # Marked late, by about the time from the deadline to the firing (the
        # deadline here is the latest of the windows', so allow a second).
        late_by = firing["payload"]["late_by_seconds"]
        fired_after = (datetime.fromisoformat(firing["occurred"]) - r.deadline).total_seconds()
        assert late_by > 1.0 and abs(late_by - fired_after) < 1.0, (late_by, fired_after, figures)


def test_a_checkpoint_survives_a_restart_with_another_hash_seed(
    after_restart: AfterRestart,
) -> None:
    r = after_restart
    if r.two_names_count_after != r.two_names_count_before:
        raise FaultUnhandled(
            f"counted {r.two_names_count_before} events before the restart "
            f"(PYTHONHASHSEED={r.hash_seeds[0]}), {r.two_names_count_after} after it "
            f"(PYTHONHASHSEED={r.hash_seeds[1]})"
        )


def test_an_action_claimed_when_the_daemon_dies_is_carried_out_after_restart(
    after_restart: AfterRestart,
) -> None:
    attempts = after_restart.claimed_requests
    if len(attempts) < 2:
        raise FaultUnhandled(
            f"{len(attempts)} attempt(s) in all, none after the restart within {GRACE_S} s"
        )


def test_a_firing_logged_but_not_claimed_when_the_daemon_dies_is_acted_on_after_restart(
    after_restart: AfterRestart,
) -> None:
    if not after_restart.unclaimed_deliveries:
        raise FaultUnhandled(f"no delivery within {GRACE_S} s of the restart")


def test_sigterm_stops_the_daemon_cleanly_with_final_checkpoints(
    after_restart: AfterRestart,
) -> None:
    r = after_restart
    # The automation counted an event after its (creation) checkpoint; the
    # restarted daemon replayed it, and only a checkpoint at shutdown saves that.
    before, after = r.checkpoint_before_sigterm, r.checkpoint_after_sigterm
    assert before is not None and after is not None and after > before, (
        f"no final checkpoint: at seq {after} after SIGTERM, {before} before"
    )
    if r.sigterm_exit_code != 0:
        raise FaultUnhandled(f"SIGTERM: exit code {r.sigterm_exit_code}, not 0; see {r.log_path}")
