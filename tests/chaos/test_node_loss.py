"""Losing a worker node of a real `ray start` cluster while events flow (issue 16 #14).

The scenario (``tests/integration/node_loss_scenario.py``) starts its own Ray
cluster with the ``ray`` CLI and a ``marmot serve`` joining it, so it runs in a
subprocess in a process group of its own (a driver cannot join a second Ray
while the session's Ray is up); if it overruns its time, the whole group is
killed.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.node_loss_scenario import SUMMARY_PREFIX
from tests.integration.scenario_process import run_scenario

TIMEOUT_S = 600


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_worker_node_loses_no_acknowledged_event_and_acts_once() -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    code, out, err = run_scenario("tests.integration.node_loss_scenario", env, TIMEOUT_S)
    assert code == 0, err[-6000:]
    [line] = [x for x in out.splitlines() if x.startswith(SUMMARY_PREFIX)]
    summary = json.loads(line.removeprefix(SUMMARY_PREFIX))
    print(summary)  # the figures, for the closing note (pytest -s)
    # Automation actors were on the killed node, and came back elsewhere.
    assert any(a.startswith("automation-") for a in summary["actors_on_killed_node"])
    assert summary["nodes_after"] == 2 and summary["automations_loaded"] == 6
    # Every acknowledged event fired once (checked in the scenario) and every
    # firing's webhook was delivered, each under its own key.
    assert summary["events_acknowledged"] > 100
    assert summary["webhook_keys"] == summary["events_acknowledged"]
    assert "RAY_AUTH_MODE=token" in summary["refused_without_token_mode"]
