"""A starting daemon's RPC face over real ZeroMQ sockets: progress, refusals, the swap.

``StartingApi`` is served by a real ``RpcServer`` on 127.0.0.1; the clients
are the real ``Client``/``AsyncClient``. No Ray: these are the transport's
rules, the daemon's own test is tests/integration/test_startup.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from marmot.actors.startup import StartupPhase
from marmot.engine.errors import DaemonUnavailable, NotFound
from marmot.transport.api import VERSION
from marmot.transport.client import AsyncClient, Client, is_serving
from tests.transport.starting_server import SERVING, starting, unused_url


def test_health_and_status_report_the_phase_and_progress() -> None:
    with starting() as server, Client(server.url, timeout_s=5) as client:
        health = client.health()
        status = client.status()
    progress = {
        "state": "starting",
        "phase": "recovering_automations",
        "automations_recovered": 12,
        "automations_total": 40,
        "elapsed_s": 8.25,
    }
    assert health == {"ok": False, "version": VERSION, **progress}
    assert status == {"version": VERSION, **progress}
    assert not is_serving(health)


def test_every_other_method_is_refused_as_unavailable_with_the_progress() -> None:
    with starting() as server, Client(server.url, timeout_s=5) as client:
        for method in ("automations.create", "events.emit", "automations.filter", "admin.backup"):
            with pytest.raises(DaemonUnavailable) as caught:
                client.call(method, {"anything": 1})
            assert caught.value.message == (
                "the daemon is starting: recovering automations (12 of 40)"
            )
            assert caught.value.details["automations_recovered"] == 12
        with pytest.raises(NotFound):
            client.call("automations.frobnicate")  # not a method at all


def test_refusals_name_the_current_phase() -> None:
    with starting() as server, Client(server.url, timeout_s=5) as client:
        server.on_loop(server.progress.enter, StartupPhase.STARTING_INGEST)
        with pytest.raises(DaemonUnavailable) as caught:
            client.call("events.emit", {"events": []})
    assert caught.value.message == "the daemon is starting: starting ingest"


def test_swapping_the_handlers_serves_the_full_table_at_once() -> None:
    with starting() as server, Client(server.url, timeout_s=5) as client:
        assert client.health()["state"] == "starting"
        server.on_loop(server.server.swap_handlers, SERVING)
        assert client.health() == {"ok": True, "state": "serving", "version": VERSION}
        with pytest.raises(NotFound):
            client.call("automations.create")  # the new table has no such method


def test_wait_ready_returns_once_the_daemon_serves_and_reports_progress() -> None:
    with starting() as server, Client(server.url, timeout_s=5) as client:
        seen: list[dict[str, Any]] = []

        def progress(health: dict[str, Any]) -> None:
            seen.append(health)
            if len(seen) == 2:  # the daemon finishes starting while the client waits
                server.on_loop(server.server.swap_handlers, SERVING)

        assert client.wait_ready(30, on_progress=progress)["state"] == "serving"
    assert len(seen) == 2 and all(h["state"] == "starting" for h in seen)


def test_wait_ready_times_out_with_the_last_progress() -> None:
    with (
        starting(recovered=3) as server,
        Client(server.url, timeout_s=5) as client,
        pytest.raises(DaemonUnavailable, match=r"still starting after 0\.3 s") as caught,
    ):
        client.wait_ready(0.3)
    assert caught.value.details["automations_recovered"] == 3


def test_wait_ready_times_out_without_details_when_nobody_answers() -> None:
    with (
        Client(unused_url(), timeout_s=5) as client,
        pytest.raises(DaemonUnavailable, match="no reply") as caught,
    ):
        client.wait_ready(0.3)
    assert caught.value.details is None


def test_async_wait_ready_returns_once_the_daemon_serves() -> None:
    with starting() as server:

        async def wait() -> dict[str, Any]:
            async with AsyncClient(server.url, timeout_s=5) as client:
                assert (await client.health())["state"] == "starting"

                def progress(health: dict[str, Any]) -> None:
                    server.loop.call_soon_threadsafe(server.server.swap_handlers, SERVING)

                return await client.wait_ready(30, on_progress=progress)

        assert asyncio.run(wait())["state"] == "serving"
