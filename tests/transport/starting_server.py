"""A real ``RpcServer`` on 127.0.0.1 answering as a starting daemon, in a thread.

For the tests of the starting RPC face and of ``marmot status``: the server
serves ``StartingApi`` over a ``StartupProgress`` the test controls, and
``swap_handlers`` turns it into a (small) serving daemon.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from marmot.actors.startup import StartupProgress
from marmot.transport.api import VERSION
from marmot.transport.protocol import METHODS
from marmot.transport.rpc import Handler, RpcServer
from marmot.transport.starting import StartingApi


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


async def serving_health(params: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "state": "serving", "version": VERSION}


async def serving_status(params: dict[str, Any]) -> dict[str, Any]:
    return {"version": VERSION, "state": "serving", "automations_loaded": 3}


SERVING: dict[str, Handler] = {"health": serving_health, "status": serving_status}


class StartingServer:
    """An RpcServer answering with a ``StartingApi`` on its own loop in a thread."""

    def __init__(self, progress: StartupProgress, clock: FakeClock) -> None:
        self.progress = progress
        self.api = StartingApi(progress, METHODS, clock)
        self.loop = asyncio.new_event_loop()
        self.server = RpcServer("tcp://127.0.0.1:*", self.api.handlers())
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self._bound.set()
        task = self.loop.create_task(self.server.serve())
        self.loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        self.loop.close()

    def on_loop(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the server's loop and wait for it."""
        done = threading.Event()

        def run() -> None:
            fn(*args)
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(5)

    @property
    def url(self) -> str:
        return self.server.bound_endpoint

    def __enter__(self) -> StartingServer:
        self._thread.start()
        assert self._bound.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self._thread.join(5)


@contextmanager
def starting(recovered: int = 12, total: int = 40) -> Iterator[StartingServer]:
    clock = FakeClock()
    progress = StartupProgress(started_at=clock.now - 8.25)
    progress.begin_recovery(total)
    progress.automations_recovered = recovered
    with StartingServer(progress, clock) as server:
        yield server


def unused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"
