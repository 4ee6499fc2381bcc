"""Web console benchmarks (not a test).

    .venv/bin/python bench/console.py [--automations 5000] [--rate 1000] [--seconds 10]

Runs a real daemon (embedded Ray, SQLite in a temporary folder) in this
process and prints:
  * the Automations list's server time (its Server-Timing header: from the
    request reaching the console to the page made) with N automations, for
    the first page, the last page, a name-prefix search and a state filter;
    the issue's bound is 300 ms; then the request that fills a page's live
    columns (last fired, next deadline, open buckets, firings in 24 h);
  * the live feed under RATE events/s for SECONDS: Debian's chromium shows
    the events page while a publisher emits, and the bench reports how many
    events the page received, how far behind it was when the publisher
    stopped, and the longest gap between two animation frames (a frozen page
    has long gaps).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marmot.config import load_config
from marmot.transport.client import Client
from marmot.transport.daemon import DaemonThread
from tests.integration.console_browser import launch
from tests.integration.harness import free_port

# The bound of the issue for the list page's server time.
_LIST_BOUND_MS = 300.0


def _automation(i: int) -> dict[str, Any]:
    return {
        "name": f"automation {i:05d}",
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": [f"bench.console.{i % 50}"],
            "for_each": ["prefect.resource.id"],
            "threshold": 3,
            "within": 60,
        },
        "actions": [{"type": "do-nothing"}],
    }


def _server_ms(client: httpx.Client, path: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        reply = client.get(path)
        reply.raise_for_status()
        timing = reply.headers["server-timing"]
        times.append(float(timing.split("dur=")[1]))
    return times


def _report(label: str, times: list[float]) -> None:
    ordered = sorted(times)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    verdict = "ok" if p95 < _LIST_BOUND_MS else "OVER"
    print(
        f"  {label:<34} median {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms   "
        f"({verdict}: bound {_LIST_BOUND_MS:.0f} ms)"
    )


def _emit_at(client: Client, rate: int, seconds: float, name: str) -> int:
    """Emit ``rate`` events a second for ``seconds``, in tenths of a second."""
    per_tick = max(1, rate // 10)
    sent = 0
    start = time.monotonic()
    ticks = int(seconds * 10)
    for tick in range(ticks):
        now = datetime.now(UTC).isoformat()
        client.emit(
            [
                {
                    "id": str(uuid4()),
                    "occurred": now,
                    "event": name,
                    "resource": {"prefect.resource.id": f"bench.resource.{(sent + k) % 100}"},
                }
                for k in range(per_tick)
            ]
        )
        sent += per_tick
        pause = start + (tick + 1) / 10 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--automations", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="marmot-bench-console-") as folder:
        config = load_config(
            None,
            env={},
            overrides={
                "data.dir": folder,
                "rpc.url": "tcp://127.0.0.1:*",
                "ingest.pull_url": "tcp://127.0.0.1:*",
                "http.port": free_port(),
                "automations_per_actor": 500,
                "max_automations": max(args.automations, 1000),
                "ray.num_cpus": 2,
            },
        )
        daemon = DaemonThread(config).start()
        try:
            ui = f"http://127.0.0.1:{config.http.port}/ui"
            with Client(daemon.rpc_url, timeout_s=120) as client:
                started = time.monotonic()
                for i in range(args.automations):
                    client.create_automation(_automation(i))
                print(
                    f"created {args.automations} automations in {time.monotonic() - started:.1f} s"
                )
                with httpx.Client(base_url=ui, timeout=30) as http:
                    http.get("/automations")  # the session cookie, and warm caches
                    print(f"Automations list, {args.automations} automations (server time):")
                    last = max(1, (args.automations + 49) // 50)
                    for label, path in [
                        ("first page", "/automations"),
                        (f"page {last} (the last)", f"/automations?page={last}"),
                        ("search 'automation 04'", "/automations?q=automation+04"),
                        ("paused only", "/automations?state=paused"),
                    ]:
                        _report(label, _server_ms(http, path, args.runs))
                    page = http.get("/automations").text
                    ids = re.findall(r'<tr data-id="([0-9a-f-]{36})"', page)
                    state = "/automations/state?" + "&".join(f"id={i}" for i in ids)
                    _report(f"live columns of {len(ids)} rows", _server_ms(http, state, args.runs))
                _feed(ui, client, args.rate, args.seconds)
        finally:
            daemon.stop()


def _feed(ui: str, client: Client, rate: int, seconds: float) -> None:
    name = f"bench.feed.{uuid4().hex[:6]}"
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page()
        page.goto(f"{ui}/events?name={name}")
        page.wait_for_function("document.getElementById('feed') !== null")
        # The longest gap between two animation frames while the feed runs.
        page.evaluate(
            """() => { window.__gap = 0; let last = performance.now();
            const tick = (t) => { window.__gap = Math.max(window.__gap, t - last); last = t;
              requestAnimationFrame(tick); }; requestAnimationFrame(tick); }"""
        )
        sent: list[int] = []
        publisher = threading.Thread(
            target=lambda: sent.append(_emit_at(client, rate, seconds, name)), daemon=True
        )
        publisher.start()
        publisher.join()
        stopped = time.monotonic()
        text = page.locator("#feed-status").text_content() or ""
        seen_at_stop = int(text.split(" ")[0]) if text else 0
        page.wait_for_function(
            f"(document.getElementById('feed-status').textContent || '').startsWith('{sent[0]} ')",
            timeout=120_000,
        )
        caught_up_s = time.monotonic() - stopped
        gap_ms = page.evaluate("window.__gap")
        rows = page.locator("#feed tbody tr").count()
        browser.close()
    print(f"Live feed at {rate} events/s for {seconds:g} s ({sent[0]} events):")
    print(f"  received by the page when the publisher stopped: {seen_at_stop}")
    print(f"  every event received {caught_up_s:.2f} s after the publisher stopped")
    print(f"  longest gap between animation frames: {gap_ms:.0f} ms; rows kept on the page: {rows}")


if __name__ == "__main__":
    main()
