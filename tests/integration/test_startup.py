"""A daemon answers while it starts, and a failed or cancelled start frees its ports.

Real Ray (the session's), real ZeroMQ and HTTP on 127.0.0.1, a real SQLite
file. Recovery is held by the daemon's ``recovery_gate`` until the test lets
it go, so "while starting" is a state the test controls, not a race.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import ray
import zmq

from marmot.actors.store import Store
from marmot.cli import EXIT_STARTING, main
from marmot.config import MarmotConfig
from marmot.engine.errors import AddressInUse, DaemonUnavailable
from marmot.engine.models.automations import Automation
from marmot.transport.client import Client
from marmot.transport.daemon import Daemon
from tests.integration.harness import (
    DaemonThread,
    event_doc,
    free_port,
    make_config,
    reactive_doc,
    wait_for,
)

pytestmark = pytest.mark.integration


def _config(data_dir: Path, **overrides: Any) -> MarmotConfig:
    """A config with a namespace of its own and a fixed RPC port (so it can be re-bound)."""
    base = {
        "ray.namespace": f"marmot-test-{uuid4().hex[:8]}",
        "rpc.url": f"tcp://127.0.0.1:{free_port()}",
    }
    return make_config(data_dir, **{**base, **overrides})


def _with_automations(data_dir: Path, count: int) -> None:
    """A data folder whose store already holds ``count`` enabled automations."""
    with Store.open(data_dir / "marmot.db") as store:
        for i in range(count):
            store.automations.create(
                Automation.model_validate(reactive_doc(f"waiting {i}", "test.startup"))
            )


def _http(config: MarmotConfig, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{config.http.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextmanager
def _held_daemon(config: MarmotConfig) -> Iterator[tuple[DaemonThread, asyncio.Event]]:
    """A daemon that answers on its sockets and waits at recovery until the gate is set."""
    gate = asyncio.Event()
    running = DaemonThread(config, recovery_gate=gate).start(wait_serving=False)
    try:
        yield running, gate
    finally:
        running.stop()


def _release(running: DaemonThread, gate: asyncio.Event) -> None:
    running.loop.call_soon_threadsafe(gate.set)


def _actor_exists(namespace: str, name: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True


def _can_bind(config: MarmotConfig) -> bool:
    """Whether the config's RPC and HTTP ports are free again (bound and let go here)."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    try:
        router.bind(config.rpc.url)
    finally:
        router.close(linger=0)
    with socket.socket() as http:
        http.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemon binds
        http.bind((config.http.host, config.http.port))
        http.listen()
    return True


def test_a_recovering_daemon_reports_progress_and_refuses_changes_until_it_serves(
    ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_automations(tmp_path, 2)
    config = _config(tmp_path)
    with (
        _held_daemon(config) as (running, gate),
        Client(running.rpc_url, timeout_s=30) as client,
    ):
        health = wait_for(
            lambda: (h := client.health())["phase"] == "recovering_automations" and h,
            what="the daemon to reach recovery",
        )
        assert health["ok"] is False and health["state"] == "starting" and health["version"]
        assert (health["automations_recovered"], health["automations_total"]) == (0, 2)
        status = client.status()
        assert status["state"] == "starting" and status["elapsed_s"] >= 0

        with pytest.raises(DaemonUnavailable) as refused:
            client.create_automation(reactive_doc("too early", "test.startup.early"))
        assert refused.value.message == ("the daemon is starting: recovering automations (0 of 2)")
        with pytest.raises(DaemonUnavailable, match="the daemon is starting"):
            client.emit([event_doc("test.startup")])
        with pytest.raises(DaemonUnavailable, match="the daemon is starting"):
            client.list_automations()

        code, body = _http(config, "/healthz")
        assert code == 503
        assert json.loads(body)["state"] == "starting"
        assert json.loads(body)["automations_total"] == 2
        code, body = _http(config, "/metrics")
        assert code == 200
        assert "marmot_serving 0.0" in body.decode()
        assert "marmot_startup_automations_remaining 2.0" in body.decode()
        assert main(["status", "--url", running.rpc_url]) == EXIT_STARTING
        assert "recovering automations 0/2" in capsys.readouterr().out

        _release(running, gate)
        ready = client.wait_ready(120)
        assert ready == {
            "ok": True,
            "state": "serving",
            "version": health["version"],
            "automations": 2,
        }
        status = client.status()
        assert status["state"] == "serving" and status["automations_loaded"] == 2
        code, body = _http(config, "/healthz")
        assert code == 200 and json.loads(body)["state"] == "serving"
        metrics = _http(config, "/metrics")[1].decode()
        assert "marmot_serving 1.0" in metrics
        assert "marmot_startup_automations_remaining 0.0" in metrics
        # Nothing was created while refused; now changes go through.
        assert {a.name for a in client.list_automations()} == {"waiting 0", "waiting 1"}
        client.create_automation(reactive_doc("in time", "test.startup.late"))
        assert len(client.emit([event_doc("test.startup")])) == 1
        assert main(["status", "--url", running.rpc_url, "--json"]) == 0


def test_a_failed_start_closes_the_sockets_it_bound_early(
    ray_session: None, tmp_path: Path
) -> None:
    blocker = zmq.Context.instance().socket(zmq.PULL)
    blocker.setsockopt(zmq.LINGER, 0)
    try:
        port = blocker.bind_to_random_port("tcp://127.0.0.1")
        # Ingest binds last, after RPC, HTTP, Ray and recovery: its busy port
        # fails the start with everything else already up.
        config = _config(tmp_path, **{"ingest.pull_url": f"tcp://127.0.0.1:{port}"})
        daemon = Daemon(config)

        async def start() -> None:
            with pytest.raises(AddressInUse, match=f"ingest.pull_url tcp://127.0.0.1:{port}"):
                await daemon.start()

        asyncio.run(asyncio.wait_for(start(), 120))
    finally:
        blocker.close(linger=0)
    assert _can_bind(config)
    assert not _actor_exists(config.ray.namespace, "timer")


def test_stopping_a_daemon_while_it_starts_frees_its_ports_and_actors(
    ray_session: None, tmp_path: Path
) -> None:
    _with_automations(tmp_path, 1)
    config = _config(tmp_path)
    with _held_daemon(config) as (running, _gate), Client(running.rpc_url) as client:
        wait_for(
            lambda: client.health()["phase"] == "recovering_automations",
            what="the daemon to reach recovery",
        )
        assert _actor_exists(config.ray.namespace, "timer")
        running.stop()  # never released: start-up is cancelled
    assert _can_bind(config)
    assert not _actor_exists(config.ray.namespace, "timer")
    assert not _actor_exists(config.ray.namespace, "executor-0")
