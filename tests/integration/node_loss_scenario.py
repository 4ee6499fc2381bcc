"""Losing a node of a real Ray cluster while events flow (issue 16 #14).

Run from the repository root as ``python -m tests.integration.node_loss_scenario``
(``tests/chaos/test_node_loss.py`` does, in a process group of its own). The
scenario:

1. starts a Ray cluster with the ``ray`` CLI, as an operator would: a head
   (``ray start --head``) and two worker nodes (``ray start --address``), each
   in a process group of its own, 1 CPU and an 80 MB object store apiece;
2. starts ``marmot serve --ray-address`` joining it (a real daemon process);
3. creates ``AUTOMATIONS`` reactive automations, one bucket per resource, each
   calling a webhook on a local HTTP receiver that counts every delivery by
   its ``Idempotency-Key``;
4. emits events in batches (one per automation, a new resource each time),
   keeping the sequence numbers the daemon acknowledged;
5. while they flow, kills the worker node that hosts the most automation
   actors (SIGKILL to its whole process group: raylet, workers, actors);
6. keeps emitting, then waits until every acknowledged event has fired its
   automation exactly once and every firing's webhook was delivered, and until
   every actor is alive again on a surviving node;
7. prints ``MARMOT_NODE_LOSS_SUMMARY {json}`` and exits 0, or exits 1 with the
   reason. Everything it started is stopped on the way out.
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
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import ray
import ray._private.services
import ray._private.state

from marmot.transport.client import Client
from tests.integration.harness import free_port, wait_for

SUMMARY_PREFIX = "MARMOT_NODE_LOSS_SUMMARY "
AUTOMATIONS = 6
WORKER_NODES = 2
OBJECT_STORE_BYTES = 80 * 1024 * 1024
BATCH_EVERY_S = 0.1
EMIT_BEFORE_KILL_S = 4.0
EMIT_AFTER_KILL_S = 12.0
RECOVERY_TIMEOUT_S = 150.0
BIN = Path(sys.executable).parent


class Deliveries:
    """Webhook deliveries counted by Idempotency-Key (a real HTTP server)."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self._lock = threading.Lock()
        deliveries = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with deliveries._lock:
                    deliveries.keys[self.headers.get("Idempotency-Key") or "?"] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.keys)


@contextlib.contextmanager
def group(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a process group of its own, killed with all it started on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield process
    finally:
        kill_group(process)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _ray_start(address: str | None, port: int, tmp: str, node: int = 0) -> list[str]:
    argv = [
        str(BIN / "ray"),
        "start",
        "--block",
        "--num-cpus=1",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--disable-usage-stats",
    ]
    if address is None:
        return [*argv, "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={tmp}"]
    # Nodes on one machine need sockets of their own: a folder each.
    return [*argv, f"--address={address}", f"--temp-dir={tmp}/n{node}"]


def _actors() -> dict[str, tuple[str, str]]:
    """Name -> (state, node id) of every named actor in the GCS actor table."""
    return {
        info["Name"]: (info["State"], info["Address"]["NodeID"])
        for info in ray._private.state.actors().values()
        if info.get("Name")
    }


def _event(name: str, resource: str) -> dict[str, Any]:
    return {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource},
    }


def _automation(k: int, block_id: str) -> dict[str, Any]:
    return {
        "name": f"node loss {k}",
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": [f"test.node-loss.{k}"],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 0,
        },
        "actions": [{"type": "call-webhook", "block_document_id": block_id, "payload": "{}"}],
    }


def scenario(work: Path, env: dict[str, str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    port = free_port()
    ip = ray._private.services.get_node_ip_address()
    address = f"{ip}:{port}"
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            group(_ray_start(None, port, env["RAY_TMPDIR"]), work / "head.log", env)
        )
        wait_for(
            lambda: "Ray runtime started" in (work / "head.log").read_text(errors="replace"),
            timeout_s=90,
            what="the head node",
        )
        ray.init(address=address, logging_level="ERROR")
        stack.callback(ray.shutdown)
        workers = [
            stack.enter_context(
                group(
                    _ray_start(address, 0, env["RAY_TMPDIR"], i + 1), work / f"worker-{i}.log", env
                )
            )
            for i in range(WORKER_NODES)
        ]
        wait_for(
            lambda: len([n for n in ray.nodes() if n["Alive"]]) == 1 + WORKER_NODES,
            timeout_s=90,
            what="the cluster's nodes",
        )
        summary["cluster_start_s"] = round(time.monotonic() - began, 1)

        rpc_url = f"tcp://127.0.0.1:{free_port()}"
        daemon_argv = [
            str(BIN / "marmot"),
            "serve",
            "--ray-address",
            address,
            "--data-dir",
            str(work / "data"),
            "--rpc-url",
            rpc_url,
            "--ingest-url",
            f"tcp://127.0.0.1:{free_port()}",
            "--http-port",
            str(free_port()),
        ]
        # Without RAY_AUTH_MODE=token Ray will not send its token to an address it
        # is given: the start fails with one line saying what to set.
        untokened = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        refused = subprocess.run(
            daemon_argv, env=untokened, capture_output=True, text=True, timeout=120
        )
        lines = (refused.stdout + refused.stderr).strip().splitlines()
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, lines[-20:]
        assert lines[-1].startswith("error: cannot join the Ray cluster at "), lines[-5:]
        assert "RAY_AUTH_MODE=token" in lines[-1], lines[-1]
        summary["refused_without_token_mode"] = lines[-1]
        daemon = stack.enter_context(group(daemon_argv, work / "daemon.log", env))
        deliveries = Deliveries()
        stack.callback(deliveries.server.shutdown)
        with Client(rpc_url, timeout_s=30) as client:
            client.wait_ready(120)
            block = client.create_block(
                {
                    "block_type_slug": "webhook",
                    "name": "receiver",
                    "data": {"url": deliveries.url, "method": "POST", "allow_private_urls": True},
                }
            )
            ids = [
                str(client.create_automation(_automation(k, str(block.id))).id)
                for k in range(AUTOMATIONS)
            ]
            automation_names = {f"automation-{i}" for i in ids}

            def ours() -> set[str] | None:
                alive = {n for n, (state, _) in _actors().items() if state == "ALIVE"}
                found = {n for n in alive if n == "timer" or n.startswith("executor-")}
                return found | automation_names if automation_names <= alive else None

            names = wait_for(ours, timeout_s=60, what="the automation actors")

            def alive_on(nodes: set[str]) -> dict[str, str] | None:
                table = _actors()
                found = {
                    n: node for n, (state, node) in table.items() if n in names and state == "ALIVE"
                }
                return found if len(found) == len(names) and set(found.values()) <= nodes else None

            nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            placement = wait_for(lambda: alive_on(nodes), timeout_s=60, what="every actor alive")
            worker_ids = [
                n["NodeID"]
                for n in ray.nodes()
                if n["Alive"] and not n.get("Resources", {}).get("node:__internal_head__")
            ]
            per_worker = Counter(
                node
                for name, node in placement.items()
                if name.startswith("automation-") and node in worker_ids
            )
            if not per_worker:
                raise AssertionError(f"no automation actor on a worker node: {placement}")
            victim_node, _ = per_worker.most_common(1)[0]
            victim = workers[_node_group(victim_node, workers)]
            summary["actors_on_killed_node"] = sorted(
                n for n, node in placement.items() if node == victim_node
            )

            acknowledged: list[dict[str, Any]] = []
            stop = threading.Event()
            errors: list[str] = []

            def emit() -> None:
                batch_no = 0
                with Client(rpc_url, timeout_s=60) as emitter:
                    while not stop.is_set():
                        batch = [
                            _event(f"test.node-loss.{k}", f"r.{batch_no}.{k}")
                            for k in range(AUTOMATIONS)
                        ]
                        try:
                            emitter.emit(batch)
                        except Exception as exc:  # not acknowledged: not counted
                            errors.append(f"{type(exc).__name__}: {exc}")
                        else:
                            acknowledged.extend(batch)
                        batch_no += 1
                        time.sleep(BATCH_EVERY_S)

            sender = threading.Thread(target=emit)
            sender.start()
            time.sleep(EMIT_BEFORE_KILL_S)
            killed_at = time.monotonic()
            kill_group(victim)
            time.sleep(EMIT_AFTER_KILL_S)
            stop.set()
            sender.join(90)
            summary["events_acknowledged"] = len(acknowledged)
            summary["emit_errors"] = len(errors)

            def survivors() -> set[str] | None:
                alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
                return alive if victim_node not in alive else None

            # The GCS marks a node dead after it misses its health checks.
            surviving = wait_for(survivors, timeout_s=120, what="the killed node marked dead")
            summary["node_marked_dead_s"] = round(time.monotonic() - killed_at, 1)
            wait_for(
                lambda: alive_on(surviving),
                timeout_s=RECOVERY_TIMEOUT_S,
                what="every actor alive again on a surviving node",
            )
            summary["actors_back_s"] = round(time.monotonic() - killed_at, 1)

            expected = {e["id"] for e in acknowledged}

            def fired_once() -> Counter[str] | None:
                events = client.filter_events(names=["prefect.automation.triggered"], limit=10_000)
                counts = Counter(e["payload"]["triggering_event"]["id"] for e in events)
                return counts if expected <= set(counts) else None

            counts = wait_for(fired_once, timeout_s=RECOVERY_TIMEOUT_S, what="every event to fire")
            summary["all_fired_s"] = round(time.monotonic() - killed_at, 1)
            twice = {k: v for k, v in counts.items() if k in expected and v > 1}
            assert not twice, f"events that fired more than once: {twice}"

            def delivered() -> Counter[str] | None:
                keys = deliveries.snapshot()
                return keys if len(keys) >= len(expected) else None

            keys = wait_for(delivered, timeout_s=RECOVERY_TIMEOUT_S, what="every webhook call")
            summary["all_delivered_s"] = round(time.monotonic() - killed_at, 1)
            summary["webhook_keys"] = len(keys)
            summary["redelivered_same_key"] = sum(v - 1 for v in keys.values())
            assert len(keys) == len(expected), (len(keys), len(expected))
            status = client.status()
            summary["nodes_after"] = status["capacity"]["nodes"]
            summary["automations_loaded"] = status["automations_loaded"]
        kill_group(daemon)
    return summary


def _node_group(node_id: str, groups: list[subprocess.Popen[bytes]]) -> int:
    """Which of ``groups`` (``ray start`` process groups) runs the raylet of
    ``node_id``: a raylet's command line names its node (``--node_id=``)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            pgid = os.getpgid(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
        if f"--node_id={node_id}".encode() in argv:
            for index, started in enumerate(groups):
                if started.pid == pgid:
                    return index
    raise AssertionError(f"no worker process group runs the raylet of node {node_id}")


def main() -> int:
    os.environ.pop("RAY_ADDRESS", None)
    tmp = tempfile.mkdtemp(prefix="mnl", dir="/tmp")  # short: Ray's socket paths
    # A cluster of `ray start` uses token authentication; a process given its
    # address joins it only with RAY_AUTH_MODE=token (the README says so).
    env = {
        **os.environ,
        "RAY_TMPDIR": tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
    }
    os.environ["RAY_TMPDIR"] = tmp
    work = Path(tmp) / "work"
    work.mkdir()
    try:
        summary = scenario(work, env)
    except Exception:
        traceback.print_exc()
        for log in sorted(work.glob("*.log")):
            print(f"--- {log.name}", file=sys.stderr)
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(SUMMARY_PREFIX + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
