"""A full disk under the data folder while a publisher sends acknowledged events,
then space freed again; checked again after a kill -9 and a restart.

The data folder is a small tmpfs (the tests run as root) that a filler file
fills to the last byte. While it is full the daemon must refuse writes with a
retryable error and say so in its health; once the filler is gone it must
recover by itself, and every acknowledged event must have fired (also those the
automation actor, stopped for a moment, evaluates while the disk is full), been
announced (``prefect.automation.triggered``), recorded in the action log and
acted on exactly once, also after a kill -9 and a restart.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from marmot.engine.errors import MarmotError
from marmot.transport.client import Client
from tests.chaos.conftest import DaemonFactory
from tests.chaos.processes import kill_pids, ray_workers
from tests.chaos.verdict import action_statuses, count_triggered
from tests.chaos.workload import WebhookReceiver, event, eventually, reactive, webhook_action
from tests.disk import fill, mounted_tmpfs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 1440
BATCH = 20
RATE_PER_S = 100.0
# Acknowledged events before the disk fills, and how long it stays full.
FULL_AFTER = 480
FULL_FOR_S = 10.0
# How long the daemon gets to act on everything once the publisher is done.
SETTLE_S = 30.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/disk``: a 48 MB tmpfs (requested before ``daemons``, so every
    daemon on it is gone before it is unmounted)."""
    with mounted_tmpfs(tmp_path / "disk", "48m") as disk:
        yield disk


class Sender:
    """Sends ``events`` in batches with ``events.emit`` from a thread, paced; a batch
    the daemon refuses is sent again (same ids) until acknowledged. Counts the
    refusals by error code."""

    def __init__(self, url: str, events: list[dict[str, Any]]) -> None:
        self.url = url
        self.events = events
        self.acknowledged: list[str] = []
        self.refusals: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="full-disk-sender", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with Client(self.url, timeout_s=10.0) as client:
                for start in range(0, len(self.events), BATCH):
                    batch = self.events[start : start + BATCH]
                    while True:
                        try:
                            client.emit(batch)
                            break
                        except MarmotError as exc:
                            self.refusals[exc.code] += 1
                            time.sleep(0.2)
                    self.acknowledged += [e["id"] for e in batch]
                    time.sleep(BATCH / RATE_PER_S)
        except BaseException as exc:  # handed to the test
            self.error = exc
        finally:
            self.finished.set()


@dataclass
class Figures:
    acknowledged: int = 0
    triggered: int = 0
    action_rows: int = 0
    acted_on: int = 0
    acted_on_after_restart: int = 0
    duplicated_after_restart: int = 0
    refusals: str = ""
    healthz_while_full: int = 0
    health_reason_while_full: str = ""
    healthz_after: int = 0

    def line(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in vars(self).items())


def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0)
    except httpx.HTTPError:
        return 0, {}
    return response.status_code, response.json()


def test_a_full_disk_refuses_writes_then_recovers_and_loses_no_firing(
    small_disk: Path, daemons: DaemonFactory, receiver: WebhookReceiver
) -> None:
    daemon = daemons("disk")
    assert daemon.data_dir == small_disk
    daemon.start()
    with Client(daemon.rpc_url, timeout_s=30) as client:
        hook = webhook_action(client, receiver, "/full")
        client.create_automation(
            reactive("full-disk", ["disk.ping"], ["prefect.resource.id"], 1, 0, [hook])
        )
    events = [event("disk.ping", f"disk.res.{n % 7}", payload={"n": n}) for n in range(EVENTS)]
    ids = {e["id"] for e in events}
    figures = Figures()
    sender = Sender(daemon.rpc_url, events).start()

    def delivered() -> Counter[str]:
        return Counter(d.key()[1] for d in receiver.on("/full"))

    assert eventually(lambda: len(sender.acknowledged) >= FULL_AFTER, 60), "sender stalled"
    # Firings made while the disk is full: the automation actor is stopped while
    # events are acknowledged and routed to it, and goes on once the disk is full.
    actor = [p.pid for p in ray_workers(daemon.session, "AutomationHost")]
    assert actor, "no automation actor"
    kill_pids(actor, signal.SIGSTOP)
    held_from = len(sender.acknowledged)
    assert eventually(lambda: len(sender.acknowledged) >= held_from + 100, 30), "sender stalled"
    filler = fill(small_disk)
    full_until = time.monotonic() + FULL_FOR_S
    # SQLite goes on writing into the WAL it has until that is used up.
    eventually(lambda: sender.refusals, FULL_FOR_S / 2)
    kill_pids(actor, signal.SIGCONT)
    # While the disk is full: /healthz and the health RPC say why.
    eventually(lambda: _healthz(daemon.http_port)[0] == 503, FULL_FOR_S / 2)
    figures.healthz_while_full, body = _healthz(daemon.http_port)
    with Client(daemon.rpc_url, timeout_s=10) as client:
        health = client.health()
    figures.health_reason_while_full = str(health.get("reason") or body.get("reason") or "")
    time.sleep(max(full_until - time.monotonic(), 0))
    filler.unlink()

    assert sender.finished.wait(120), "the sender did not finish"
    assert sender.error is None, repr(sender.error)
    eventually(lambda: len(delivered()) >= len(sender.acknowledged), SETTLE_S)
    eventually(lambda: _healthz(daemon.http_port)[0] == 200, SETTLE_S)
    figures.healthz_after = _healthz(daemon.http_port)[0]
    figures.acknowledged = len(sender.acknowledged)
    figures.refusals = ",".join(f"{k}:{v}" for k, v in sorted(sender.refusals.items()))
    figures.triggered = count_triggered(daemon.db_path)
    figures.action_rows = sum(action_statuses(daemon.db_path).values())
    figures.acted_on = len(delivered().keys() & ids)

    print(f"\n[full disk, before the restart] {figures.line()}")

    # A kill -9 and a restart change nothing: nothing left to act on, nothing acted twice.
    daemon.kill()
    daemon.start(timeout_s=180)  # it first clears what the killed daemon left of Ray
    eventually(lambda: len(delivered().keys() & ids) >= len(ids), 15.0)
    time.sleep(3.0)  # anything acted on twice would show by now
    after = delivered()
    figures.acted_on_after_restart = len(after.keys() & ids)
    figures.duplicated_after_restart = sum(1 for n in after.values() if n > 1)
    print(f"\n[full disk] {figures.line()}")

    assert figures.acknowledged == EVENTS, figures.line()
    assert figures.healthz_while_full == 503, figures.line()
    assert "full" in figures.health_reason_while_full, figures.line()
    assert set(sender.refusals) == {"storage_full"}, figures.line()
    assert figures.healthz_after == 200, figures.line()
    assert figures.triggered == EVENTS, figures.line()
    assert figures.action_rows == EVENTS, figures.line()
    assert figures.acted_on == EVENTS, figures.line()
    assert figures.acted_on_after_restart == EVENTS, figures.line()
    assert figures.duplicated_after_restart == 0, figures.line()
