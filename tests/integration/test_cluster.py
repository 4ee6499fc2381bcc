"""The daemon on a multi-node Ray cluster (head + 2 workers) on this machine.

A driver cannot join a second Ray while the session's Ray is up, so the
scenario (``cluster_scenario.py``) runs in a subprocess of its own, in a
process group of its own: if it overruns its time, the whole group (the
scenario and every Ray process it started) is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.cluster_scenario import AUTOMATIONS, SUMMARY_PREFIX, WORKER_NODES

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already ended
        os.killpg(pgid, signal.SIGKILL)


@pytest.mark.integration
@pytest.mark.slow
def test_automation_actors_spread_over_cluster_nodes_and_all_fire() -> None:
    # Short on purpose: Ray's socket paths under it must stay within 107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="mrc", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.cluster_scenario"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            out, err = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            out, err = process.communicate()
            pytest.fail(f"the cluster scenario overran {TIMEOUT_S} s:\n{err[-4000:]}")
    finally:
        _kill_group(process.pid)  # Ray processes left behind by a failed shutdown
        shutil.rmtree(ray_tmp, ignore_errors=True)

    assert process.returncode == 0, f"scenario failed:\n{out[-2000:]}\n{err[-6000:]}"
    lines = [line for line in out.splitlines() if line.startswith(SUMMARY_PREFIX)]
    assert len(lines) == 1, out
    summary = json.loads(lines[0].removeprefix(SUMMARY_PREFIX))
    assert summary["ok"] is True
    assert summary["nodes"] == 1 + WORKER_NODES
    assert summary["automations"] == AUTOMATIONS
    assert sum(summary["automation_actors_per_node"].values()) == AUTOMATIONS
    assert summary["automation_actor_nodes"] >= 2
    assert summary["fired"] == AUTOMATIONS
    assert summary["actions_executed"] == AUTOMATIONS
