"""Action throughput: firings through the executor pool to a webhook (not a test).

    .venv/bin/python bench/actions.py [--firings N] [--pool N] [--rate R ...]

Runs a real daemon (embedded Ray, SQLite in a temporary folder) in this
process and a real HTTP server on 127.0.0.1 (aiohttp's, in another process).
Every published event fires an automation whose one action is
``call-webhook`` with a templated payload; prints actions/s from the first
event in to the last webhook request received, and the time from an event
to its webhook call (p50/p99), with the CPU time the daemon's process and
the whole machine spent per action.

With ``--rate``, events are published at that many per second instead (a
separate publisher process, each event stamped as it goes): the lag from
publish to the webhook request received is the latency of a firing's action
at that load (for example ``--rate 1 --firings 30`` and ``--rate 2000``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from marmot.actors.runtime import RayRuntime
from marmot.config import RayConfig, load_config
from marmot.transport.client import Client, Publisher
from marmot.transport.daemon import DaemonThread


def _serve(port: int, counter: Any, lags: Any, expected: int) -> None:
    """The webhook receiver (aiohttp's server, C parser): counts requests and records
    each one's lag from its event, sent back in chunks so the receiver stays fast."""
    import asyncio
    import json

    from aiohttp import web

    pending: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        pending.append(time.time() - datetime.fromisoformat(body["occurred"]).timestamp())
        counter.value += 1  # this process alone writes it
        if len(pending) >= 500 or counter.value >= expected:
            lags.put(list(pending))
            pending.clear()
        return web.Response(text="ok")

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()  # until terminated

    asyncio.run(serve())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.01)


def _machine_cpu_s() -> float:
    """CPU seconds all processes of the machine spent so far (user + system)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    busy = sum(int(value) for value in fields[:8]) - int(fields[3]) - int(fields[4])
    return busy / os.sysconf("SC_CLK_TCK")


def _publish_flat_out(url: str, firings: int) -> None:
    with Publisher(url, batch_size=200) as publisher:
        for k in range(firings):
            publisher.publish(_bench_event(k))


def _bench_event(k: int, one_in: int = 1) -> dict[str, Any]:
    """Event ``k``; one in ``one_in`` fires the automation, the others concern none."""
    return {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "bench.fire" if k % one_in == 0 else "bench.noise",
        "resource": {"prefect.resource.id": f"bench.{k}"},
    }


def _publish_paced(url: str, events: int, rate: float, one_in: int) -> None:
    """Publisher process: one event per frame at ``rate``/s, stamped as it goes."""
    started = time.perf_counter()
    with Publisher(url, batch_size=1) as publisher:
        for k in range(events):
            pause = started + k / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            publisher.publish(_bench_event(k, one_in))
            publisher.flush()


def run(
    firings: int, pool: int, rate: float = 0, one_in: int = 1
) -> tuple[float, float, float, float, float]:
    """(actions/s, lag p50 ms, lag p99 ms, daemon CPU us per action, machine CPU us
    per action)."""
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("i", 0, lock=False)
    lags = ctx.Queue()
    port = _free_port()
    receiver = ctx.Process(target=_serve, args=(port, counter, lags, firings), daemon=True)
    receiver.start()
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(
            None,
            env={},
            overrides={
                "data.dir": folder,
                "rpc.url": "tcp://127.0.0.1:*",
                "ingest.pull_url": "tcp://127.0.0.1:*",
                "http.enabled": False,
                "executors.pool_size": pool,
            },
        )
        daemon = DaemonThread(config).start()
        try:
            with Client(daemon.rpc_url, timeout_s=60) as client:
                _wait(lambda: _port_open(port), 30)
                block = client.create_block(
                    {
                        "block_type_slug": "webhook",
                        "name": "bench",
                        "data": {
                            "url": f"http://127.0.0.1:{port}/hook",
                            "allow_private_urls": True,
                        },
                    }
                )
                client.create_automation(
                    {
                        "name": "bench webhook",
                        "trigger": {
                            "expect": ["bench.fire"],
                            "for_each": ["prefect.resource.id"],
                            "threshold": 1,
                            "within": 0,
                        },
                        "actions": [
                            {
                                "type": "call-webhook",
                                "block_document_id": str(block.id),
                                "payload": '{"resource": "{{ event.resource.id }}", '
                                '"occurred": "{{ event.occurred.isoformat() }}"}',
                            }
                        ],
                    }
                )
            began, cpu, machine = time.perf_counter(), time.process_time(), _machine_cpu_s()
            if rate:
                paced = ctx.Process(
                    target=_publish_paced,
                    args=(daemon.ingest_url, firings * one_in, rate, one_in),
                    daemon=True,
                )
                paced.start()
                paced.join()
            else:
                _publish_flat_out(daemon.ingest_url, firings)
            _wait(lambda: counter.value >= firings, 600)
            elapsed = time.perf_counter() - began
            cpu = time.process_time() - cpu
            machine = _machine_cpu_s() - machine
            samples: list[float] = []
            while len(samples) < firings:
                samples += lags.get(timeout=60)
            samples.sort()
        finally:
            daemon.stop()
            receiver.terminate()
    return (
        firings / elapsed,
        statistics.median(samples) * 1000,
        samples[int(0.99 * (len(samples) - 1))] * 1000,
        cpu / firings * 1e6,
        machine / firings * 1e6,
    )


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--firings", type=int, default=5000)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument(
        "--rate", type=float, default=0, help="events/s to publish at (default: flat out)"
    )
    parser.add_argument(
        "--one-in", type=int, default=1, help="with --rate: one event in N fires (default 1)"
    )
    args = parser.parse_args()
    runtime = RayRuntime(RayConfig())
    runtime.start()
    try:
        rate, p50, p99, cpu, machine = run(args.firings, args.pool, args.rate, args.one_in)
        load = f"at {args.rate:g} events/s, 1 in {args.one_in} firing" if args.rate else "flat out"
        print(
            f"call-webhook through {args.pool} executor(s), {load}: {rate:,.0f} actions/s "
            f"({args.firings:,} firings); publish to webhook call p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms; CPU per action: daemon process {cpu:,.0f} us, "
            f"machine {machine:,.0f} us",
            flush=True,
        )
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main()
