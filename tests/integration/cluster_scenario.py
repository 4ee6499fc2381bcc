"""The daemon on a three-node Ray cluster on this machine (head + 2 workers, 1 CPU each).

Run from the repository root as ``python -m tests.integration.cluster_scenario``
(``test_cluster.py`` does, in a subprocess: a driver cannot join a second Ray
while the test session's Ray is up). The scenario:

1. starts a ``ray.cluster_utils.Cluster`` (80 MB object store per node, no
   dashboard) and a ``Daemon`` joining it through ``ray.address``, with two
   executors, serving on this process's asyncio loop;
2. creates ``AUTOMATIONS`` reactive automations over RPC (from a thread);
3. reads every automation actor's node from the GCS actor table and checks
   that they are alive, on nodes of this cluster, and on at least two nodes;
4. emits one event per automation and waits until every automation has fired
   and its action has run;
5. stops the daemon and the cluster (also on failure), prints one line
   ``MARMOT_CLUSTER_SUMMARY {json}`` and exits 0, or exits 1 with a traceback.

Placement is Ray's: automation actors reserve no CPU (``num_cpus=0``), and Ray
places an actor that needs no resources on a node chosen at random, regardless
of utilisation ("DEFAULT" strategy, https://docs.ray.io/en/master/ray-core/scheduling/).
With 8 such actors on 3 nodes, all of them land on one node with probability
3 / 3**8 (0.05 %), so "at least two nodes" is checked as is.

``ray.util.state.list_actors`` needs the dashboard's HTTP API, which the minimal
``ray`` install used here does not ship, so the actor table is read straight
from the GCS with ``ray._private.state.actors()``.

Ray keeps its sessions under ``$RAY_TMPDIR`` (the test passes a fresh folder that
it removes afterwards, even when it had to kill the scenario), and so does the
daemon's data dir; when it is unset the scenario makes one and removes it at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import ray
import ray._private.state
from ray.cluster_utils import Cluster

from marmot.transport.client import Client
from marmot.transport.daemon import Daemon
from tests.integration.harness import make_config, reactive_doc, wait_for

SUMMARY_PREFIX = "MARMOT_CLUSTER_SUMMARY "
AUTOMATIONS = 8
WORKER_NODES = 2
NODE_OBJECT_STORE_BYTES = 80 * 1024 * 1024
SCENARIO_TIMEOUT_S = 150.0
TRIGGERED = "prefect.automation.triggered"
EXECUTED = "prefect.automation.action.executed"


_reactive = reactive_doc


def _node_args(**extra: Any) -> dict[str, Any]:
    return {"num_cpus": 1, "object_store_memory": NODE_OBJECT_STORE_BYTES, **extra}


def _event(name: str, resource: str) -> dict[str, Any]:
    return {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource},
    }


def _actor_nodes(names: set[str]) -> dict[str, str]:
    """Node id of every ALIVE actor among ``names`` (from the GCS actor table)."""
    table = ray._private.state.actors()
    return {
        info["Name"]: info["Address"]["NodeID"]
        for info in table.values()
        if info["Name"] in names and info["State"] == "ALIVE"
    }


def _checks(rpc_url: str, roles: dict[str, str]) -> dict[str, Any]:
    """Everything that talks to the daemon: runs in a thread off the daemon's loop."""
    timings: dict[str, float] = {}
    with Client(rpc_url, timeout_s=30) as client:
        started = time.monotonic()
        expects = [f"test.cluster.{k}" for k in range(AUTOMATIONS)]
        ids = [
            str(client.create_automation(_reactive(f"cluster {k}", expect)).id)
            for k, expect in enumerate(expects)
        ]
        timings["create_automations_s"] = time.monotonic() - started

        status = client.status()
        assert status["automations_loaded"] == AUTOMATIONS, status
        assert status["automation_actors"] == AUTOMATIONS, status
        assert status["capacity"]["nodes"] == 1 + WORKER_NODES, status

        alive_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert alive_nodes == set(roles), (alive_nodes, roles)
        automation_actors = {f"automation-{i}" for i in ids}
        others = {"timer", "executor-0", "executor-1"}
        expected = automation_actors | others

        def all_alive() -> dict[str, str] | None:
            found = _actor_nodes(expected)
            return found if len(found) == len(expected) else None

        placement = wait_for(all_alive, timeout_s=30, what="every actor ALIVE in the actor table")
        assert set(placement.values()) <= alive_nodes, placement
        automation_nodes = {placement[name] for name in automation_actors}
        assert len(automation_nodes) >= 2, f"all automation actors on one node: {placement}"

        started = time.monotonic()
        client.emit([_event(expect, "cluster.resource") for expect in expects])

        def every_automation_in(event_name: str) -> set[str] | None:
            """The automations with an ``event_name`` event, once that is all of them."""
            events = client.filter_events(names=[event_name], limit=1000)
            seen = {e["resource"]["prefect.resource.id"] for e in events}
            found = {i for i in ids if f"prefect.automation.{i}" in seen}
            return found if found == set(ids) else None

        fired = wait_for(
            lambda: every_automation_in(TRIGGERED), timeout_s=60, what="every automation to fire"
        )
        timings["fire_all_s"] = time.monotonic() - started
        executed = wait_for(
            lambda: every_automation_in(EXECUTED), timeout_s=60, what="every action to run"
        )
        timings["execute_all_s"] = time.monotonic() - started

    def count(actors: set[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in sorted(actors):
            role = roles[placement[name]]
            counts[role] = counts.get(role, 0) + 1
        return dict(sorted(counts.items()))

    return {
        "nodes": len(alive_nodes),
        "automations": len(ids),
        "automation_actors_per_node": count(automation_actors),
        "automation_actor_nodes": len(automation_nodes),
        "other_actors": {name: roles[placement[name]] for name in sorted(others)},
        "fired": len(fired),
        "actions_executed": len(executed),
        **{k: round(v, 2) for k, v in timings.items()},
    }


async def _serve_and_check(address: str, data_dir: Path, roles: dict[str, str]) -> dict[str, Any]:
    config = make_config(
        data_dir,
        **{"ray.address": address, "executors.pool_size": 2, "http.enabled": False},
    )
    started = time.monotonic()
    async with Daemon(config) as daemon:
        daemon_start_s = time.monotonic() - started
        result = await asyncio.to_thread(_checks, daemon.rpc_endpoint, roles)
        stopping = time.monotonic()
    result["daemon_start_s"] = round(daemon_start_s, 2)
    result["daemon_stop_s"] = round(time.monotonic() - stopping, 2)
    return result


def main() -> int:
    """Run the scenario; 0 when every check held."""
    began = time.monotonic()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("RAY_ADDRESS", None)  # join only the cluster started here
    own_ray_tmp = None
    if not os.environ.get("RAY_TMPDIR"):
        # Short: Ray's socket paths under it must stay within the 107-byte limit.
        own_ray_tmp = tempfile.mkdtemp(prefix="mrc", dir="/tmp")
        os.environ["RAY_TMPDIR"] = own_ray_tmp
    # Inside Ray's folder, so that whoever removes that one (the test) removes both.
    data_dir = Path(tempfile.mkdtemp(prefix="data", dir=os.environ["RAY_TMPDIR"]))
    cluster: Cluster | None = None
    summary: dict[str, Any] = {}
    failed = False
    try:
        cluster = Cluster(initialize_head=True, head_node_args=_node_args(include_dashboard=False))
        workers = [cluster.add_node(**_node_args()) for _ in range(WORKER_NODES)]
        cluster.wait_for_nodes(timeout=60)
        roles = {cluster.head_node.node_id: "head"}
        roles.update({node.node_id: f"worker-{i}" for i, node in enumerate(workers, 1)})
        summary["cluster_start_s"] = round(time.monotonic() - began, 2)
        summary.update(
            asyncio.run(
                asyncio.wait_for(
                    _serve_and_check(cluster.address, data_dir, roles), SCENARIO_TIMEOUT_S
                )
            )
        )
    except BaseException:
        failed = True
        traceback.print_exc()
    finally:
        stopping = time.monotonic()
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)
        if own_ray_tmp is not None:
            shutil.rmtree(own_ray_tmp, ignore_errors=True)
    summary["cluster_stop_s"] = round(time.monotonic() - stopping, 2)
    summary["total_s"] = round(time.monotonic() - began, 2)
    summary["ok"] = not failed
    print(SUMMARY_PREFIX + json.dumps(summary, sort_keys=True), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
