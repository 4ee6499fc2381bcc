"""``make screenshots``: PNGs of each console page, from a seeded demo daemon.

Starts a daemon on loopback with a fresh data folder, fills it with
``seed_demo`` and has Debian's chromium photograph every page into the
folder given (``docs/screenshots`` by default).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from marmot.transport.client import Client
from marmot.transport.daemon import DaemonThread
from tests.integration.console_browser import launch, seed_demo
from tests.integration.harness import make_config, wait_for

__all__ = ["take"]


def _shoot(page: Page, url: str, path: Path, ready: str = "main") -> None:
    page.goto(url)
    page.locator(ready).first.wait_for()
    page.wait_for_timeout(300)  # the live columns and fonts settle
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path}")


def take(out: Path) -> None:
    """Photograph every console page of a seeded demo daemon into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="marmot-demo-") as data:
        config = make_config(Path(data), **{"ray.num_cpus": 2})
        daemon = DaemonThread(config).start()
        try:
            with Client(daemon.rpc_url, timeout_s=60) as client:
                ids = seed_demo(client, tag="demo")
                wait_for(
                    lambda: client.automation_history(ids["failing"]).firings,
                    what="the demo firing",
                )
            ui = f"http://127.0.0.1:{config.http.port}/ui"
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                filled = "#automations td[data-col=firings_24h]:not(:has-text('…'))"
                _shoot(page, f"{ui}/automations", out / "automations.png", filled)
                page.goto(f"{ui}/automations/{ids['failing']}")
                page.locator("[data-testid=firings] summary").first.click()
                page.screenshot(path=str(out / "automation-detail.png"), full_page=True)
                print(f"wrote {out / 'automation-detail.png'}")
                new = f"{ui}/automations/new?template=flow-run-state"
                _shoot(page, new, out / "automation-new.png")
                _shoot(page, f"{ui}/events", out / "events.png", "#feed tbody tr")
                _shoot(page, f"{ui}/incidents", out / "incidents.png")
                _shoot(page, f"{ui}/webhooks", out / "webhooks.png")
                _shoot(page, f"{ui}/blocks", out / "blocks.png")
                _shoot(page, f"{ui}/status", out / "status.png")
                browser.close()
        finally:
            daemon.stop()


if __name__ == "__main__":
    take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
