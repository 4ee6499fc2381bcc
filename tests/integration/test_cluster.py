"""The daemon on a multi-node Ray cluster (head + 2 workers) on this machine.

A driver cannot join a second Ray while the session's Ray is up, so the
scenario (``cluster_scenario.py``) runs in a subprocess of its own, in a
process group of its own: if it overruns its time, the whole group (the
scenario and every Ray process it started) is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from tests.integration.cluster_scenario import AUTOMATIONS, SUMMARY_PREFIX, WORKER_NODES
from tests.integration.scenario_process import run_scenario

TIMEOUT_S = 240


@pytest.mark.integration
@pytest.mark.slow
def test_automation_actors_spread_over_cluster_nodes_and_all_fire() -> None:
    # Short on purpose: Ray's socket paths under it must stay within 107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="mrc", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        code, out, err = run_scenario("tests.integration.cluster_scenario", env, TIMEOUT_S)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    assert code == 0, f"scenario failed:\n{out[-2000:]}\n{err[-6000:]}"
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
