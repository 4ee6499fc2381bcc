"""Helpers for integration tests: configs on loopback, polling with a deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

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
        "executors.backoff_base_s": 0.05,
        "executors.backoff_max_s": 0.5,
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


def event_doc(name: str, resource: str = "r.1", **extra: Any) -> dict[str, Any]:
    """A Prefect-shaped event that occurred now."""
    return {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource},
        **extra,
    }


def reactive_doc(name: str, expect: str, threshold: int = 1) -> dict[str, Any]:
    """A reactive automation per resource: ``threshold`` events within 60 s."""
    return {
        "name": name,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": [expect],
            "for_each": ["prefect.resource.id"],
            "threshold": threshold,
            "within": 60,
        },
        "actions": [{"type": "do-nothing"}],
    }


__all__ = ["DaemonThread", "event_doc", "free_port", "make_config", "reactive_doc", "wait_for"]
