"""One Ray instance for the whole test session (DESIGN.md: init costs seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
import ray

from marmot.actors.runtime import RayRuntime
from marmot.config import RayConfig
from tests.integration.harness import DaemonThread, make_config
from tests.integration.prefect_server import prefect_api  # noqa: F401


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    runtime = RayRuntime(RayConfig(num_cpus=2, object_store_memory_mb=100))
    runtime.start()
    yield
    runtime.shutdown()
    assert not ray.is_initialized()


@pytest.fixture(scope="session")
def daemon(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    """One daemon for the integration tests that do not need their own."""
    running = DaemonThread(make_config(tmp_path_factory.mktemp("daemon"))).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def orchestrated(
    ray_session: None,
    prefect_api: str,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DaemonThread]:
    """One daemon whose orchestrator actions go to the session's Prefect server."""
    config = make_config(
        tmp_path_factory.mktemp("orchestrated"),
        **{
            "ray.namespace": f"marmot-test-{uuid4().hex[:8]}",
            "orchestrator.api_url": prefect_api,
        },
    )
    running = DaemonThread(config).start()
    yield running
    running.stop()
