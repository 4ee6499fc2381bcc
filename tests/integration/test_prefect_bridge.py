"""The Prefect event bridge against a real Prefect server that stores its events.

Events emitted to the server arrive in Marmot's log under their own ids, large
ones included; a server restart, a daemon restart (with a gap longer than the
socket's backfill, so it is paged over REST) and a server guarded by an auth
string lose nothing and log nothing twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, make_config, wait_for
from tests.integration.prefect_events_server import PrefectServer

pytestmark = pytest.mark.integration

# The server's socket backfills 5 s at most, so any longer gap needs the REST query.
BACKFILL = {"PREFECT_SERVER_EVENTS_MAXIMUM_WEBSOCKET_BACKFILL": "PT5S"}


def bridge_config(data_dir: Path, server: PrefectServer, **overrides: Any) -> Any:
    """A daemon config bridged to ``server``, reconnecting quickly."""
    return make_config(
        data_dir,
        **{
            "ray.namespace": f"marmot-test-{uuid4().hex[:8]}",
            "prefect.api_url": server.api,
            "prefect.reconnect_min_s": 0.2,
            "prefect.reconnect_max_s": 1.0,
            "prefect.overlap_s": 2.0,
            "prefect.socket_backfill_s": 5.0,
            **overrides,
        },
    )


class BackfillServer(PrefectServer):
    """A server whose socket backfills only 5 s."""

    def env(self) -> dict[str, str]:
        return {**super().env(), **BACKFILL}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    running = BackfillServer(tmp_path_factory.mktemp("prefect-events")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bridged")


@pytest.fixture(scope="module")
def bridged(ray_session: None, server: PrefectServer, data_dir: Path) -> Iterator[DaemonThread]:
    running = DaemonThread(bridge_config(data_dir, server)).start()
    yield running
    running.stop()


def prefect_event(name: str, **extra: Any) -> dict[str, Any]:
    """An event in Prefect's shape, for ``POST /events``."""
    return {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": f"test.{uuid4().hex[:8]}"},
        **extra,
    }


def logged(daemon: DaemonThread, ids: list[str]) -> set[str]:
    """Which of these ids are in the daemon's event log."""
    assert daemon.daemon.store is not None
    known = daemon.daemon.store.events.known_ids([UUID(i) for i in ids])
    return {str(i) for i in known}


def bridge_status(daemon: DaemonThread) -> dict[str, Any]:
    with Client(daemon.rpc_url, timeout_s=30.0) as client:
        status: dict[str, Any] = client.status()["prefect_bridge"]
    return status


def test_events_emitted_to_prefect_are_logged_with_their_ids(
    server: PrefectServer, bridged: DaemonThread
) -> None:
    wait_for(lambda: bridge_status(bridged)["state"] == "connected", 60, "the bridge to connect")
    events = [prefect_event("test.bridge.hello") for _ in range(5)]
    server.call("POST", "events", json=events)
    ids = [e["id"] for e in events]
    wait_for(lambda: logged(bridged, ids) == set(ids), 30, "the events in Marmot's log")
    status = bridge_status(bridged)
    assert status["state"] == "connected"
    assert status["lag_s"] is not None
    with httpx.Client() as http:
        health = http.get(f"http://127.0.0.1:{bridged.config.http.port}/healthz").json()
        metrics = http.get(f"http://127.0.0.1:{bridged.config.http.port}/metrics").text
    assert health["prefect_bridge"]["state"] == "connected"
    assert "marmot_prefect_bridge_connected 1.0" in metrics
    assert 'marmot_events_received_total{source="prefect"}' in metrics


def test_an_event_as_large_as_prefect_accepts_passes(
    server: PrefectServer, bridged: DaemonThread
) -> None:
    # 1.4 MB: over websockets' default 1 MiB message bound and Marmot's own
    # 256 KiB payload bound, under Prefect's 1.5 MB.
    large = prefect_event("test.bridge.large", payload={"blob": "x" * 1_400_000})
    after = prefect_event("test.bridge.after-large")
    server.call("POST", "events", json=[large])
    server.call("POST", "events", json=[after])
    ids = [large["id"], after["id"]]
    wait_for(lambda: logged(bridged, ids) == set(ids), 30, "the large event and the next one")


def test_a_prefect_server_restart_loses_nothing_and_logs_nothing_twice(
    server: PrefectServer, bridged: DaemonThread
) -> None:
    started = datetime.now(UTC)
    posted: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        # While the server is down, posts fail: those events were never stored.
        with httpx.Client(timeout=5.0, headers=server.headers()) as http:
            while not stop.is_set():
                event = prefect_event("test.bridge.restart")
                try:
                    if http.post(server.api + "/events", json=[event]).status_code < 300:
                        posted.append(event["id"])
                except httpx.HTTPError:
                    pass
                stop.wait(0.05)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        wait_for(lambda: len(posted) >= 20, 30, "events before the restart")
        server.stop()
        server.start()
        count = len(posted)
        wait_for(lambda: len(posted) >= count + 20, 60, "events after the restart")
    finally:
        stop.set()
        publisher.join()

    def stored_ids() -> list[str]:
        return server.stored_event_ids(
            event={"name": ["test.bridge.restart"]},
            occurred={"since": started.isoformat(), "until": datetime.now(UTC).isoformat()},
        )

    wait_for(lambda: set(posted) <= set(stored_ids()), 30, "the server to store every event")
    stored = stored_ids()
    wait_for(lambda: logged(bridged, stored) == set(stored), 60, "every stored event in Marmot")
    assert len(stored) == len(set(stored))
    assert bridged.daemon.store is not None
    rows = bridged.daemon.store.events.filter(names=["test.bridge.restart"], limit=100_000)
    assert sorted(str(event.id) for _, event in rows) == sorted(stored)  # once each
    assert bridge_status(bridged)["reconnects"] >= 1


def test_a_daemon_restart_pages_a_long_gap_over_rest(
    server: PrefectServer, bridged: DaemonThread, data_dir: Path
) -> None:
    # The module's daemon stops; events pile up on the server for longer than
    # its socket backfills; a new daemon on the same data folder resumes.
    wait_for(lambda: bridge_status(bridged)["state"] == "connected", 60, "the bridge")
    bridged.stop()
    missed = [prefect_event("test.bridge.missed") for _ in range(120)]
    server.call("POST", "events", json=missed)
    ids = [e["id"] for e in missed]
    wait_for(
        lambda: set(ids) <= set(server.stored_event_ids(event={"name": ["test.bridge.missed"]})),
        30,
        "stored",
    )
    # Past the socket's 5 s backfill.
    threading.Event().wait(6.0)
    resumed = DaemonThread(bridge_config(data_dir, server)).start()
    try:
        wait_for(lambda: logged(resumed, ids) == set(ids), 60, "the missed events in Marmot")
        later = prefect_event("test.bridge.after-gap")
        server.call("POST", "events", json=[later])
        wait_for(lambda: logged(resumed, [later["id"]]), 30, "the socket after the catch-up")
    finally:
        resumed.stop()
