"""Marmot next to a real Prefect server: stuck-run cancels and bridge throughput (not a test).

    .venv/bin/python bench/prefect_server.py [--runs 20] [--within 10]
                                      [--events 5000] [--batch 100] [--rate R]

Starts ``prefect server start`` (its own automations on, scheduler off) with a
temporary home, and a Marmot daemon bridged to it. The same proactive "stuck
run" automation (after ``prefect.flow-run.Running``, expect a terminal state
within ``--within`` seconds, for each run, then ``cancel-flow-run``) is made
in Prefect, for the runs of one flow, and in Marmot, for those of another;
``--runs`` flow runs of each are put in Running over the REST API at once.
For every run, the delay from its deadline (Running's timestamp plus
``within``) to the Cancelling state arriving at the server is measured from
the run's state history; p50/p99 side by side. Then ``--events`` events are
posted to the server (``--batch`` per POST, at ``--rate`` events/s or at
once) and the bridge's throughput is the events per second from the first
post to the last event in Marmot's log. Events the server's stream dropped
(it drops them for a subscriber 256 behind) come with the bridge's sweep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx

from marmot.actors.runtime import RayRuntime
from marmot.config import RayConfig, load_config
from marmot.transport.client import Client
from marmot.transport.daemon import DaemonThread

TERMINAL = [f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prefect(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Prefect server with its event services and automations, on a free port."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_REGISTER_BLOCKS_ON_START="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED="false",
        PREFECT_SERVER_SERVICES_FOREMAN_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        DO_NOT_TRACK="1",
    )
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    command = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        command, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return process, api
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the Prefect server did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def stuck_trigger(flow_name: str, within: float) -> dict[str, Any]:
    return {
        "type": "event",
        "posture": "Proactive",
        "after": ["prefect.flow-run.Running"],
        "expect": TERMINAL,
        "for_each": ["prefect.resource.id"],
        "match_related": {"prefect.resource.role": "flow", "prefect.resource.name": flow_name},
        "threshold": 1,
        "within": within,
    }


def cancel_delays(http: httpx.Client, run_ids: list[str], within: float) -> list[float]:
    """Seconds from each run's deadline to its Cancelling state (waits for all)."""
    delays: dict[str, float] = {}
    deadline = time.monotonic() + within + 120
    while len(delays) < len(run_ids) and time.monotonic() < deadline:
        for run_id in run_ids:
            if run_id in delays:
                continue
            states = http.get("flow_run_states/", params={"flow_run_id": run_id}).json()
            running = [s for s in states if s["type"] == "RUNNING"]
            cancelling = [s for s in states if s["type"] in ("CANCELLING", "CANCELLED")]
            if running and cancelling:
                start = datetime.fromisoformat(running[0]["timestamp"])
                end = min(datetime.fromisoformat(s["timestamp"]) for s in cancelling)
                delays[run_id] = (end - start - timedelta(seconds=within)).total_seconds()
        time.sleep(0.2)
    return list(delays.values())


def post(http: httpx.Client, path: str, body: Any) -> Any:
    """POST, trying again while a busy SQLite-backed server answers 503."""
    for _ in range(50):
        response = http.post(path, json=body)
        if response.status_code != 503:
            response.raise_for_status()
            return response.json() if response.content else None
        time.sleep(0.2)
    response.raise_for_status()
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--within", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100, help="events per POST /events")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="post at most this many events/s (0: at once)"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="marmot-bench-prefect-"))
    server, api = start_prefect(home)
    runtime = RayRuntime(RayConfig(num_cpus=2, object_store_memory_mb=100))
    runtime.start()
    config = load_config(
        None,
        env={},
        overrides={
            "data.dir": str(home / "marmot"),
            "rpc.url": "tcp://127.0.0.1:*",
            "ingest.pull_url": "tcp://127.0.0.1:*",
            "http.enabled": False,
            "prefect.api_url": api,
            "prefect.reconnect_max_s": 1.0,
        },
    )
    daemon = DaemonThread(config).start()
    try:
        with httpx.Client(base_url=api + "/", timeout=30) as http, Client(daemon.rpc_url) as marmot:
            prefect_flow = http.post(
                "flows/", json={"name": f"bench-prefect-{uuid4().hex[:6]}"}
            ).json()
            marmot_flow = http.post(
                "flows/", json={"name": f"bench-marmot-{uuid4().hex[:6]}"}
            ).json()
            http.post(
                "automations/",
                json={
                    "name": "stuck runs (Prefect)",
                    "trigger": stuck_trigger(prefect_flow["name"], args.within),
                    "actions": [{"type": "cancel-flow-run"}],
                },
            ).raise_for_status()
            marmot.create_automation(
                {
                    "name": "stuck runs (Marmot)",
                    "trigger": stuck_trigger(marmot_flow["name"], args.within),
                    "actions": [{"type": "cancel-flow-run"}],
                }
            )
            if args.runs:
                time.sleep(2.0)  # Prefect's triggers service loads automations periodically
            runs: dict[str, list[str]] = {"prefect": [], "marmot": []}
            for _ in range(args.runs):
                for side, flow in (("prefect", prefect_flow), ("marmot", marmot_flow)):
                    body = {"flow_id": flow["id"], "state": {"type": "RUNNING"}}
                    runs[side].append(post(http, "flow_runs/", body)["id"])
            results = {
                side: cancel_delays(http, ids, args.within) for side, ids in runs.items() if ids
            }
            print(
                f"stuck-run cancel, deadline to Cancelling at the server ({args.runs} runs each):"
            )
            for side, delays in results.items():
                if not delays:
                    print(f"  {side:8s} no run was cancelled")
                    continue
                print(
                    f"  {side:8s} p50 {percentile(delays, 0.5):6.2f} s  "
                    f"p99 {percentile(delays, 0.99):6.2f} s  "
                    f"min {min(delays):6.2f} s  ({len(delays)}/{args.runs} cancelled)"
                )
            # Bridge throughput: events posted to Prefect, into Marmot's log.
            name = f"bench.bridge.{uuid4().hex[:6]}"
            ids: list[UUID] = []
            started = time.perf_counter()
            # 100 per POST: the server's stream drops events for a subscriber 256 behind,
            # so one larger POST loses some to every socket (the bridge's sweep brings
            # them within a minute; --batch 500 shows it).
            for offset in range(0, args.events, args.batch):
                batch = [
                    {
                        "id": str(uuid4()),
                        "occurred": datetime.now(UTC).isoformat(),
                        "event": name,
                        "resource": {"prefect.resource.id": f"bench.{i}"},
                    }
                    for i in range(offset, min(args.events, offset + args.batch))
                ]
                ids += [UUID(e["id"]) for e in batch]
                post(http, "events", batch)
                if args.rate:  # paced: the batch's share of a second at --rate
                    ahead = started + len(ids) / args.rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
            posted = time.perf_counter() - started
            store = daemon.daemon.store
            assert store is not None
            while len(store.events.known_ids(ids)) < len(ids):
                if time.perf_counter() - started > 300:
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            logged = len(store.events.known_ids(ids))
            status = marmot.status()["prefect_bridge"]
            print(
                f"bridge: {logged}/{len(ids)} events in Marmot's log in {elapsed:.2f} s "
                f"({logged / elapsed:,.0f} events/s; posting took {posted:.2f} s); "
                f"{args.batch} per POST; reconnects {status['reconnects']}, "
                f"duplicates {status['duplicates']}"
            )
    finally:
        daemon.stop()
        runtime.shutdown()
        stop(server)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
