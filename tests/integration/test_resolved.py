"""Resolved states end to end (``resolved_states: true``): real Ray, ZeroMQ, SQLite.

A Proactive automation resolves when its expected event arrives after it
fired; a Reactive one when its window closes (the timer calls it then). Each
emits ``prefect.automation.resolved`` and runs ``actions_on_resolve``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, event_doc, make_config, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def resolving(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    data_dir: Path = tmp_path_factory.mktemp("resolved")
    config = make_config(data_dir, **{"ray.namespace": "marmot-resolved", "resolved_states": True})
    running = DaemonThread(config).start()
    try:
        with Client(running.rpc_url, timeout_s=30) as client:
            yield client
    finally:
        running.stop()


def _of(client: Client, name: str, automation_id: object) -> list[dict[str, Any]]:
    resource = f"prefect.automation.{automation_id}"
    return [
        e
        for e in client.filter_events(names=[name], limit=1000)
        if e["resource"]["prefect.resource.id"] == resource
    ]


def test_proactive_and_reactive_automations_resolve_and_run_actions_on_resolve(
    resolving: Client,
) -> None:
    client = resolving
    proactive = client.create_automation(
        {
            "name": "job must finish",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "after": ["test.job.started"],
                "expect": ["test.job.finished"],
                "for_each": ["prefect.resource.id"],
                "within": 10,
            },
            "actions": [{"type": "do-nothing"}],
            "actions_on_resolve": [{"type": "do-nothing"}],
        }
    )
    reactive = client.create_automation(
        {
            "name": "burst",
            "trigger": {
                "type": "event",
                "expect": ["test.burst"],
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": 2,
            },
            "actions_on_resolve": [{"type": "do-nothing"}],
        }
    )
    burst = event_doc("test.burst", "r.burst")
    client.emit([event_doc("test.job.started", "job.1"), burst])

    # Reactive: fires at once, resolves when its 2 s window closes.
    [fired] = wait_for(lambda: _of(client, "prefect.automation.triggered", reactive.id))
    [resolved] = wait_for(
        lambda: _of(client, "prefect.automation.resolved", reactive.id), what="window close"
    )
    assert resolved["payload"]["triggering_event"]["id"] == burst["id"]
    assert resolved["payload"]["triggering_labels"] == {"prefect.resource.id": "r.burst"}
    assert resolved["seq"] > fired["seq"]

    # Proactive: fires at its deadline; the late finish resolves it.
    wait_for(
        lambda: _of(client, "prefect.automation.triggered", proactive.id),
        timeout_s=40,
        what="the proactive deadline",
    )
    assert _of(client, "prefect.automation.resolved", proactive.id) == []
    finished = event_doc("test.job.finished", "job.1")
    client.emit([finished])
    [late] = wait_for(lambda: _of(client, "prefect.automation.resolved", proactive.id))
    assert late["payload"]["triggering_event"]["id"] == finished["id"]
    assert late["resource"]["prefect.posture"] == "Proactive"

    # actions ran for the firing, actions_on_resolve for the resolution (the
    # reactive automation has no `actions`: only its resolution acted).
    def executed(automation_id: object) -> list[str]:
        return sorted(
            e["payload"]["invocation"]
            for e in _of(client, "prefect.automation.action.executed", automation_id)
        )

    assert len(wait_for(lambda: executed(proactive.id)[1:], what="both actions")) == 1
    assert len(wait_for(lambda: executed(reactive.id))) == 1
    assert client.explain(proactive.id).triggers[0].unresolved == []
