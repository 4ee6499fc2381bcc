"""The web console's browser tests' helpers: Debian's chromium under Playwright,
and a demo daemon's contents (used by the tests and ``make screenshots``).

Playwright's own browser download is not reachable here: the tests drive the
system's chromium (``make test`` installs it when it is missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

from playwright.sync_api import Browser, Playwright

from marmot.transport.client import Client
from tests.integration.harness import event_doc, reactive_doc, wait_for

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "launch", "seed_demo"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright: Playwright) -> Browser:
    """Headless chromium from the system's packages."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def seed_demo(client: Client, tag: str | None = None) -> dict[str, Any]:
    """Automations, events, firings, an incident, a webhook and a block, as a demo
    daemon shows them. Returns the ids of what it made."""
    tag = tag or uuid4().hex[:6]
    failing = client.create_automation(
        {
            **reactive_doc(f"flow runs failing {tag}", "prefect.flow-run.Failed", threshold=2),
            "description": "Two failed runs of one flow within a minute.",
        }
    )
    incident = client.create_automation(
        {
            **reactive_doc(f"declare an incident {tag}", f"demo.{tag}.outage"),
            "actions": [{"type": "declare-incident", "title": "Outage of {{ event.resource.id }}"}],
        }
    )
    proactive = client.create_automation(
        {
            "name": f"nightly ETL heartbeat {tag}",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "expect": ["etl.heartbeat"],
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": 3600,
            },
            "actions": [{"type": "do-nothing"}],
        }
    )
    for i in range(3):
        client.create_automation(
            reactive_doc(f"work pool {i} not ready {tag}", "prefect.work-pool.not-ready")
        )
    client.pause_automation(client.read_automation_by_name(f"work pool 2 not ready {tag}").id)
    client.emit(
        [
            event_doc("prefect.flow-run.Failed", "prefect.flow-run.a1"),
            event_doc("prefect.flow-run.Failed", "prefect.flow-run.a1"),
            event_doc("prefect.flow-run.Failed", "prefect.flow-run.b2"),
            event_doc("etl.heartbeat", "etl.nightly"),
            event_doc(f"demo.{tag}.outage", "prefect.work-pool.gpu"),
        ]
    )
    wait_for(
        lambda: client.list_incidents(automation_id=incident.id),
        what="the demo incident",
    )
    webhook = client.create_webhook(
        f"github {tag}",
        '{"event": "github.push", "resource": {"prefect.resource.id": "github.repo"}}',
        description="Pushes to the ETL repository",
    )
    block = client.create_block(
        {
            "name": f"ops-slack-{tag}",
            "block_type_slug": "slack-webhook",
            "data": {"url": "https://hooks.slack.com/services/T000/B000/XXXX"},
        }
    )
    return {
        "failing": str(failing.id),
        "incident": str(incident.id),
        "proactive": str(proactive.id),
        "webhook": webhook["id"],
        "block": str(block.id),
    }
