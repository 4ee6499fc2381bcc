"""The Prefect event bridge against a real server behind PREFECT_SERVER_API_AUTH_STRING.

The bridge runs on its own here (no daemon): its events go to a list, which
stands in for the daemon's log, so a refused login is seen without Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.config import PrefectConfig
from marmot.engine.models.events import Event
from marmot.transport.prefect_bridge import BridgeState, PrefectBridge
from tests.integration.prefect_events_server import PrefectServer
from tests.integration.test_prefect_bridge import prefect_event

pytestmark = pytest.mark.integration

AUTH_STRING = "marmot:correct-horse"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    running = PrefectServer(tmp_path_factory.mktemp("guarded"), auth_string=AUTH_STRING).start()
    yield running
    running.stop()


class Collected:
    """The events a bridge logged, in a list."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def emit(self, events: Sequence[Event]) -> object:
        self.events.extend(events)
        return None

    async def known_ids(self, ids: Sequence[UUID]) -> set[UUID]:
        logged = {e.id for e in self.events}
        return {i for i in ids if i in logged}


def bridge(
    server: PrefectServer, data_dir: Path, auth_string: str, sink: Collected
) -> PrefectBridge:
    config = PrefectConfig(
        api_url=server.api,
        auth_string=SecretStr(auth_string),
        reconnect_min_s=0.2,
        reconnect_max_s=0.5,
        timeout_s=10.0,
    )
    return PrefectBridge(
        config,
        data_dir,
        emit=sink.emit,
        known_ids=sink.known_ids,
        registry=CollectorRegistry(),
        clock=SYSTEM_CLOCK,
    )


async def until(predicate: Any, timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


def test_the_bridge_logs_in_with_the_auth_string(guarded: PrefectServer, tmp_path: Path) -> None:
    asyncio.run(logs_in(guarded, tmp_path))


async def logs_in(guarded: PrefectServer, tmp_path: Path) -> None:
    sink = Collected()
    running = bridge(guarded, tmp_path, AUTH_STRING, sink)
    task = asyncio.create_task(running.run())
    try:
        await until(lambda: running.state is BridgeState.CONNECTED, 30, "connected")
        event = prefect_event("test.bridge.guarded")
        await asyncio.to_thread(guarded.call, "POST", "events", json=[event])
        await until(lambda: any(str(e.id) == event["id"] for e in sink.events), 30, "the event")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_wrong_auth_string_is_refused_and_retried(guarded: PrefectServer, tmp_path: Path) -> None:
    asyncio.run(is_refused(guarded, tmp_path))


async def is_refused(guarded: PrefectServer, tmp_path: Path) -> None:
    sink = Collected()
    running = bridge(guarded, tmp_path, "marmot:wrong", sink)
    task = asyncio.create_task(running.run())
    try:
        await until(lambda: running.reconnects >= 2, 30, "two refused attempts")
        assert running.state is not BridgeState.CONNECTED
        assert running.last_error is not None
        assert not task.done()  # it keeps trying
        status = running.status()
        assert status["state"] in ("waiting", "connecting")
        assert status["reconnects"] >= 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sink.events == []


def test_orchestrator_actions_log_in_with_the_bridges_auth_string(
    guarded: PrefectServer,
) -> None:
    """With a bridge and no orchestrator of its own, actions act on the bridged
    server with its auth string (HTTP basic auth); without it they are refused."""
    from marmot.actors.action_runs import ActionFailed
    from marmot.config import load_config
    from marmot.transport.orchestrator import OrchestratorClient

    config = load_config(
        None,
        env={},
        overrides={"prefect.api_url": guarded.api, "prefect.auth_string": AUTH_STRING},
    )
    settings = config.orchestrator
    assert settings.api_url == guarded.api
    assert settings.auth_string is not None
    assert settings.auth_string.get_secret_value() == AUTH_STRING
    pool = guarded.call("POST", "work_pools/", json={"name": "guarded-pool", "type": "process"})

    async def read(auth_string: str | None) -> dict[str, Any]:
        client = OrchestratorClient(guarded.api, auth_string=auth_string, timeout_s=10)
        try:
            return await client.read_work_pool(UUID(pool["id"]))
        finally:
            await client.aclose()

    assert asyncio.run(read(AUTH_STRING))["name"] == "guarded-pool"
    with pytest.raises(ActionFailed):
        asyncio.run(read(None))
