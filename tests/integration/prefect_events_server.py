"""A real Prefect server that stores and streams events, for the event bridge's tests.

Unlike the session's API-only server (``prefect_server.py``), this one runs
Prefect's event persister (so its REST event query and its socket's backfill
answer) and may be restarted on the same port and database, or guarded by
``PREFECT_SERVER_API_AUTH_STRING``. Its own automations stay off (the
triggers service), and so does the scheduler: nothing acts behind the tests.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.harness import free_port
from tests.integration.prefect_server import STARTUP_TIMEOUT_S, _prefect_command, _server_env, _stop

# Services off: Prefect's own automations, scheduling and housekeeping.
_SERVICES_OFF = (
    "TRIGGERS",
    "SCHEDULER",
    "LATE_RUNS",
    "FOREMAN",
    "CANCELLATION_CLEANUP",
    "PAUSE_EXPIRATIONS",
    "EVENT_LOGGER",
)


class PrefectServer:
    """``prefect server start`` with its event persister, on a fixed port and database."""

    def __init__(self, home: Path, *, auth_string: str | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.auth_string = auth_string
        self.log = home / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The server's environment."""
        env = _server_env(self.home)
        env.update({f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in _SERVICES_OFF})
        # Stored quickly, so the REST query and the backfill see events at once.
        env["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL"] = "0.2"
        if self.auth_string is not None:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        return env

    def start(self) -> PrefectServer:
        """Start the server and wait until it answers."""
        command = [
            _prefect_command(),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log.open("ab") as sink:
            self._process = subprocess.Popen(
                command,
                env=self.env(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_healthy(self._process)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(timeout=2.0, headers=self.headers()) as http:
            while True:
                if process.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"the Prefect server exited early; its log:\n{tail}")
                try:
                    if http.get(f"{self.api}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Prefect server did not answer {self.api}/health")
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (its database stays)."""
        if self._process is not None:
            _stop(self._process)
            self._process = None

    def headers(self) -> dict[str, str]:
        """The basic-auth header a guarded server asks for."""
        if self.auth_string is None:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(self.auth_string.encode()).decode()}

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; raises unless it answers 2xx. Returns the JSON.

        A 503 (the server's SQLite busy, say while Marmot writes to it) is sent
        again a few times, as Prefect's own client does."""
        with httpx.Client(base_url=self.api + "/", timeout=30.0, headers=self.headers()) as http:
            for pause_s in (0.2, 0.5, 1.0, 2.0, 0.0):
                response = http.request(method, path.lstrip("/"), **kwargs)
                if response.status_code != 503 or not pause_s:
                    break
                time.sleep(pause_s)
        response.raise_for_status()
        return response.json() if response.content else None

    def stored_event_ids(self, **filter_json: Any) -> list[str]:
        """The ids of every event the server stored matching ``filter_json`` (all pages)."""
        body = {"filter": {**filter_json, "order": "ASC"}, "limit": 50}
        ids: list[str] = []
        with httpx.Client(timeout=30.0, headers=self.headers()) as http:
            response = http.post(self.api + "/events/filter", json=body)
            while True:
                response.raise_for_status()
                page = response.json()
                ids += [event["id"] for event in page["events"]]
                if not page.get("next_page"):
                    return ids
                response = http.get(page["next_page"])

    def run_flow(
        self, source: str, *, timeout_s: float = 180.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python script (the body of a flow module) against this server in a
        subprocess; returns it completed (raises if it failed)."""
        env = self.env()
        env["PREFECT_API_URL"] = self.api
        if self.auth_string is not None:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        env["PREFECT_LOGGING_LEVEL"] = "WARNING"
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(source)],
            env=env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )

    def start_flow(self, source: str) -> subprocess.Popen[str]:
        """Start a flow script against this server; returns the running process."""
        env = self.env()
        env["PREFECT_API_URL"] = self.api
        env["PREFECT_LOGGING_LEVEL"] = "WARNING"
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(source)],
            env=env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
