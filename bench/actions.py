"""Action throughput: firings through the executor pool to a webhook (not a test).

    .venv/bin/python bench/actions.py [--firings N] [--pool N]

Runs a real daemon (embedded Ray, SQLite in a temporary folder) in this
process and a real HTTP server on 127.0.0.1 (uvicorn, in another process).
Every published event fires an automation whose one action is
``call-webhook`` with a templated payload; prints actions/s from the first
event in to the last webhook request received, and the time from an event
to its webhook call (p50/p99).
"""

from __future__ import annotations

import argparse
import multiprocessing
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


def _serve(port: int, counter: Any, lags: Any) -> None:
    """The webhook receiver: counts requests, records event-to-call lag."""
    import json

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hook(request: Request) -> PlainTextResponse:
        body = json.loads(await request.body())
        occurred = datetime.fromisoformat(body["occurred"]).timestamp()
        with counter.get_lock():
            counter.value += 1
        lags.put(time.time() - occurred)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


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


def run(firings: int, pool: int) -> tuple[float, float, float]:
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("i", 0)
    lags = ctx.Queue()
    port = _free_port()
    receiver = ctx.Process(target=_serve, args=(port, counter, lags), daemon=True)
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
            began = time.perf_counter()
            with Publisher(daemon.ingest_url, batch_size=200) as publisher:
                for k in range(firings):
                    publisher.publish(
                        {
                            "id": str(uuid4()),
                            "occurred": datetime.now(UTC).isoformat(),
                            "event": "bench.fire",
                            "resource": {"prefect.resource.id": f"bench.{k}"},
                        }
                    )
            _wait(lambda: counter.value >= firings, 600)
            elapsed = time.perf_counter() - began
        finally:
            daemon.stop()
            receiver.terminate()
    samples = sorted(lags.get() for _ in range(firings))
    return (
        firings / elapsed,
        statistics.median(samples) * 1000,
        samples[int(0.99 * (len(samples) - 1))] * 1000,
    )


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--firings", type=int, default=5000)
    parser.add_argument("--pool", type=int, default=2)
    args = parser.parse_args()
    runtime = RayRuntime(RayConfig())
    runtime.start()
    try:
        rate, p50, p99 = run(args.firings, args.pool)
        print(
            f"call-webhook through {args.pool} executor(s): {rate:,.0f} actions/s "
            f"({args.firings:,} firings); event to webhook call p50 {p50:.0f} ms, "
            f"p99 {p99:.0f} ms",
            flush=True,
        )
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main()
