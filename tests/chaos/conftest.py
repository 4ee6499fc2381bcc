"""Fixtures of the fault tests: daemons as subprocesses that are always killed,
with a check that none of their processes (embedded Ray included) survives."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.processes import DaemonProcess, survivors
from tests.chaos.workload import WebhookReceiver

DaemonFactory = Callable[..., DaemonProcess]


class FaultUnhandled(AssertionError):
    """Raised by a fault test when the daemon did not deal with the fault it staged
    (the message gives what was seen); other errors are failures of the test itself."""


@contextlib.contextmanager
def managed_daemons(base: Path) -> Iterator[DaemonFactory]:
    """Makes ``DaemonProcess``es on data dirs under ``base``; at the end every one is
    killed with all its processes, and any process that had outlived its daemon,
    or survives the cleanup, fails."""
    made: list[DaemonProcess] = []

    def make(name: str = "data", **settings: Any) -> DaemonProcess:
        daemon = DaemonProcess(base / name, settings)
        made.append(daemon)
        return daemon

    try:
        yield make
    finally:
        strays = [p for daemon in made for p in daemon.cleanup()]
        left = [p for daemon in made for p in daemon.leftovers()]
        assert not left, f"processes still running after cleanup: {left}"
        assert not strays, f"processes outlived their daemon: {strays}"


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonFactory]:
    """``managed_daemons`` for one test."""
    with managed_daemons(tmp_path) as make:
        yield make


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running() -> Iterator[None]:
    """After the fault tests, ``ps`` shows no process of any daemon they started."""
    yield
    left = survivors()
    assert not left, "processes of the fault tests' daemons still run:\n" + "\n".join(left)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    running = WebhookReceiver()
    yield running
    running.close()
