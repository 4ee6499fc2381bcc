"""What an RPC client that never reads costs the server: memory and health latency.

Runs a real ``RpcServer`` serving ``events.filter`` over a real event log (SQLite,
``EVENTS`` events with ~1.5 KB payloads) in a subprocess, sends ``REQUESTS``
``events.filter`` requests of ``LIMIT`` events (in pages, when the server has
them) from a DEALER that reads nothing (receive queue of one message, a 4 KB
kernel buffer), and prints the server's resident memory and how long
``health`` took meanwhile.

    .venv/bin/python bench/rpc_unread.py [--requests 300] [--limit 10000] [--list]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import zmq

from marmot.actors.store import Store
from marmot.config import MarmotConfig
from marmot.engine.errors import DaemonUnavailable, LimitExceeded, ValidationFailed
from marmot.engine.models.events import Event, EventLimits
from marmot.transport.api import Api
from marmot.transport.codec import pack_rpc
from marmot.transport.rpc import RpcServer
from marmot.transport.rpc_clients import RpcClient

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _fill(store: Store, count: int) -> None:
    payload = {"text": "p" * 1400, "n": 1}
    for start in range(0, count, 1000):
        batch = [
            Event.model_validate(
                {
                    "occurred": T0 + timedelta(seconds=i),
                    "event": f"bench.unread.{i % 10}",
                    "resource": {"prefect.resource.id": f"r.{i % 100}"},
                    "payload": payload,
                }
            )
            for i in range(start, min(start + 1000, count))
        ]
        store.events.append(batch)


async def _serve(data_dir: str, events: int) -> None:
    store = Store.open(Path(data_dir) / "marmot.db")
    _fill(store, events)
    # Only events.filter is served: no Ray (runtime) or task group is needed.
    service: Any = SimpleNamespace(store=store, config=MarmotConfig(), runtime=None, tasks=None)
    api = Api(service, EventLimits())
    handlers = {name: h for name, h in api.handlers().items() if name == "events.filter"}

    async def health(params: dict[str, Any]) -> Any:
        return {"ok": True}

    server = RpcServer("tcp://127.0.0.1:*", {**handlers, "health": health})

    async def stats(params: dict[str, Any]) -> Any:
        metrics = {
            s.name + json.dumps(s.labels, sort_keys=True): s.value
            for m in server._metrics.registry.collect()
            for s in m.samples
            if s.name.endswith("_total") and s.value
        }
        return {"requests": server.stats.requests, "metrics": metrics}

    server.swap_handlers({**handlers, "health": health, "stats": stats})
    await server.start()
    print(server.bound_endpoint, flush=True)
    await server.serve()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--settle-s", type=float, default=120)
    parser.add_argument("--list", action="store_true", help="ask for lists, not pages")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.events))
        return
    with tempfile.TemporaryDirectory() as data_dir:
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", data_dir, "--events", str(args.events)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            endpoint = child.stdout.readline().strip()
            _flood(endpoint, child.pid, args)
        finally:
            child.terminate()
            child.wait(10)


def _flood(endpoint: str, pid: int, args: argparse.Namespace) -> None:
    context = zmq.Context.instance()
    params: dict[str, Any] = {"limit": args.limit, "page": not args.list}
    with RpcClient(endpoint, timeout_s=120) as probe:
        probe.call("health")
        try:
            one = probe.call("events.filter", params)
        except ValidationFailed:  # a server from before pages: one list of them all
            params = {"limit": args.limit}
            one = probe.call("events.filter", params)
        except LimitExceeded as exc:  # the list form, over the page size
            one = exc.message
        size = len(pack_rpc(one))
    idle = _rss_mb(pid)
    print(f"server RSS idle: {idle:.0f} MB; one reply to {params}: {size / 1e6:.1f} MB")
    deaf = context.socket(zmq.DEALER)
    deaf.setsockopt(zmq.LINGER, 0)
    deaf.setsockopt(zmq.RCVHWM, 1)
    deaf.setsockopt(zmq.RCVBUF, 4096)
    deaf.connect(endpoint)
    for n in range(args.requests):
        request = {"id": f"u{n}", "method": "events.filter", "params": params}
        deaf.send(pack_rpc(request))
    started = time.monotonic()
    peak, worst_health = idle, 0.0
    last: dict[str, Any] | None = None
    with RpcClient(endpoint, timeout_s=600) as probe:
        while time.monotonic() - started < args.settle_s:
            asked = time.monotonic()
            with contextlib.suppress(DaemonUnavailable):
                probe.call("health")
            worst_health = max(worst_health, time.monotonic() - asked)
            rss = _rss_mb(pid)
            peak = max(peak, rss)
            answered = {k: v for k, v in probe.call("stats")["metrics"].items() if "filter" in k}
            if answered == last and time.monotonic() - asked < 0.1:
                break  # no events.filter request moved for a second: the flood is over
            last = answered
            time.sleep(1.0)
        print(
            f"{args.requests} unread replies: server RSS peak {peak:.0f} MB, "
            f"after {_rss_mb(pid):.0f} MB; slowest health call {worst_health:.2f} s; "
            f"settled after {time.monotonic() - started:.0f} s"
        )
        print(json.dumps(probe.call("stats"), indent=1))
    deaf.close(linger=0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
