"""A real Prefect server on 127.0.0.1 for the orchestrator tests, and helpers that
create flows, deployments, flow runs, work pools, work queues and block documents
in it over its REST API.

One server per test session: ``prefect server start --no-services`` (the API
only: no scheduler, no Prefect automations acting behind the tests' backs) with
its own ``PREFECT_HOME`` and SQLite file, analytics and UI off.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.integration.harness import free_port

STARTUP_TIMEOUT_S = 120.0
"""How long the server may take to answer ``/api/health`` (migrations included)."""

_LOG_TAIL_CHARS = 4000


def _prefect_command() -> str:
    beside_python = Path(sys.executable).with_name("prefect")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("prefect")
    if found is None:
        pytest.fail("the prefect CLI is not installed (pip install -e '.[test]')")
    return found


def _server_env(home: Path) -> dict[str, str]:
    # Nothing from the caller's Prefect profile may leak in (an API URL, a key).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            # The tests create the one block type they need; registering all of
            # Prefect's built-in ones costs start-up time.
            "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


def _log_tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-_LOG_TAIL_CHARS:] or "(the server wrote nothing)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group, then kill it if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def _wait_healthy(api: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=2.0) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the Prefect server exited with code {process.returncode} before "
                    f"answering; its log:\n{_log_tail(log)}"
                )
            try:
                if http.get(f"{api}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Prefect server did not answer {api}/health within "
                    f"{STARTUP_TIMEOUT_S:g} s; its log:\n{_log_tail(log)}"
                )
            time.sleep(0.1)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API URL (``http://127.0.0.1:<port>/api``) of a Prefect server run for the session."""
    home = tmp_path_factory.mktemp("prefect-home")
    log = home / "server.log"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    command = [
        _prefect_command(),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-services",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            env=_server_env(home),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        _wait_healthy(api, process, log)
    except RuntimeError as exc:
        _stop(process)
        pytest.fail(str(exc), pytrace=False)
    except BaseException:
        _stop(process)
        raise
    try:
        yield api
    finally:
        _stop(process)


# -- objects created over REST -------------------------------------------------


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def api_call(api: str, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the server; fails the test unless it answers 2xx. Returns the JSON."""
    with httpx.Client(base_url=api + "/", timeout=30.0) as http:
        response = http.request(method, path.lstrip("/"), **kwargs)
    if response.status_code >= 300:
        pytest.fail(f"{method} {path} answered HTTP {response.status_code}: {response.text}")
    return response.json() if response.content else None


def read_object(api: str, path: str) -> dict[str, Any] | None:
    """``GET path``: the object, or None when the server answers 404."""
    with httpx.Client(base_url=api + "/", timeout=30.0) as http:
        response = http.get(path.lstrip("/"))
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def create_flow(api: str, name: str | None = None) -> dict[str, Any]:
    """A new flow."""
    flow: dict[str, Any] = api_call(api, "POST", "flows/", json={"name": name or _unique("flow")})
    return flow


def create_work_pool(api: str, name: str | None = None) -> dict[str, Any]:
    """A new ``process`` work pool (no worker needed: nothing is ever run)."""
    body = {"name": name or _unique("pool"), "type": "process"}
    pool: dict[str, Any] = api_call(api, "POST", "work_pools/", json=body)
    return pool


def create_work_queue(api: str, pool_name: str, name: str | None = None) -> dict[str, Any]:
    """A new work queue in the named pool."""
    queue: dict[str, Any] = api_call(
        api, "POST", f"work_pools/{pool_name}/queues", json={"name": name or _unique("queue")}
    )
    return queue


def create_deployment(
    api: str,
    *,
    flow_id: str | None = None,
    work_pool_name: str | None = None,
    work_queue_name: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A new deployment (of a new flow unless ``flow_id`` is given); ``fields`` go
    into the body as they are (``parameters``, ``tags``, ``paused``...)."""
    body: dict[str, Any] = {
        "name": _unique("deployment"),
        "flow_id": flow_id or create_flow(api)["id"],
        **fields,
    }
    if work_pool_name is not None:
        body["work_pool_name"] = work_pool_name
    if work_queue_name is not None:
        body["work_queue_name"] = work_queue_name
    deployment: dict[str, Any] = api_call(api, "POST", "deployments/", json=body)
    return deployment


def create_flow_run(
    api: str,
    *,
    deployment_id: str | None = None,
    flow_id: str | None = None,
    state_type: str = "RUNNING",
) -> dict[str, Any]:
    """A new flow run in ``state_type``: of the deployment when one is given (Prefect
    suspends only those), else of ``flow_id`` or a new flow."""
    state = {"type": state_type}
    if deployment_id is not None:
        path = f"deployments/{deployment_id}/create_flow_run"
        body: dict[str, Any] = {"state": state}
    else:
        path = "flow_runs/"
        body = {"flow_id": flow_id or create_flow(api)["id"], "state": state}
    flow_run: dict[str, Any] = api_call(api, "POST", path, json=body)
    assert flow_run["state_type"] == state_type, flow_run["state"]
    return flow_run


def create_block_document(
    api: str,
    data: dict[str, Any],
    *,
    slug: str | None = None,
    secret_fields: tuple[str, ...] = (),
    name: str | None = None,
) -> dict[str, Any]:
    """A block document of a new block type (``slug``) whose ``secret_fields``
    Prefect hides unless asked for them."""
    slug = slug or _unique("marmot-block")
    block_type = api_call(api, "POST", "block_types/", json={"name": slug, "slug": slug})
    schema = api_call(
        api,
        "POST",
        "block_schemas/",
        json={
            "block_type_id": block_type["id"],
            "capabilities": [],
            "fields": {
                "title": slug,
                "type": "object",
                "properties": {key: {"type": "string"} for key in data},
                "secret_fields": list(secret_fields),
                "block_schema_references": {},
            },
        },
    )
    document: dict[str, Any] = api_call(
        api,
        "POST",
        "block_documents/",
        json={
            "name": name or _unique("block"),
            "data": data,
            "block_type_id": block_type["id"],
            "block_schema_id": schema["id"],
        },
    )
    return document
