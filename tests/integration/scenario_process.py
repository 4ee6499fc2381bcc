"""Run a scenario module (one that starts Ray clusters of its own) in a subprocess,
in a process group of its own: a driver cannot join a second Ray while the test
session's Ray is up, and whatever the scenario started is killed with it, even
when it overruns its time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def kill_group(pgid: int) -> None:
    """SIGKILL a process group (nothing happens when it has already ended)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_scenario(module: str, env: Mapping[str, str], timeout_s: float) -> tuple[int, str, str]:
    """``python -m module`` from the repository root: its exit code, stdout and stderr;
    the test fails when it overruns ``timeout_s``."""
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={k: v for k, v in env.items() if k != "RAY_ADDRESS"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            out, err = process.communicate()
            pytest.fail(f"{module} overran {timeout_s:g} s:\n{err[-4000:]}")
    finally:
        kill_group(process.pid)  # Ray processes a failed shutdown left behind
    return process.returncode, out, err
