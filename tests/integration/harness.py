"""Helpers for integration tests: configs on loopback, polling with a deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from marmot.config import MarmotConfig, load_config
from marmot.transport.daemon import DaemonThread

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


__all__ = ["DaemonThread", "free_port", "make_config", "wait_for"]
