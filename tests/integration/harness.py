"""Run a real daemon in a background thread for integration tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from marmot.config import MarmotConfig, load_config
from marmot.transport.daemon import Daemon

T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(data_dir: Path, **overrides: Any) -> MarmotConfig:
    """A config on loopback with OS-chosen ports and the given overrides."""
    base = {
        "data.dir": str(data_dir),
        "rpc.url": "tcp://127.0.0.1:*",
        "ingest.pull_url": "tcp://127.0.0.1:*",
        "http.port": free_port(),
        "executors.pool_size": 1,
    }
    return load_config(None, env={}, overrides={**base, **overrides})


class DaemonThread:
    """A ``Daemon`` serving on its own event loop in a thread."""

    def __init__(self, config: MarmotConfig) -> None:
        self.config = config
        self.daemon = Daemon(config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="marmot-daemon", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.daemon:
            self._ready.set()
            await self._stop.wait()

    def start(self, timeout_s: float = 120.0) -> DaemonThread:
        """Start serving; returns once the sockets are bound."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("daemon did not start")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Run a coroutine function on the daemon's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the daemon and join its thread."""
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)

    @property
    def rpc_url(self) -> str:
        return self.daemon.rpc_endpoint

    @property
    def ingest_url(self) -> str:
        return self.daemon.ingest_endpoint


def wait_for(predicate: Callable[[], T], timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
