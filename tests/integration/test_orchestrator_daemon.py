"""Orchestrator actions through the whole daemon, against a real Prefect server:
an event about a flow run fires an automation whose actions change that run and
start a deployment, with parameters rendered from the event.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, event_doc, wait_for
from tests.integration.prefect_server import (
    api_call,
    create_deployment,
    create_flow_run,
    read_object,
)

pytestmark = pytest.mark.integration


def _on(expect: str, actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": f"{expect} {uuid4().hex[:6]}",
        "trigger": {"expect": [expect], "threshold": 1, "within": 0},
        "actions": actions,
    }


def test_a_stuck_run_is_cancelled_and_a_cleanup_deployment_runs(
    orchestrated: DaemonThread, prefect_api: str
) -> None:
    flow_run = create_flow_run(prefect_api)
    cleanup = create_deployment(prefect_api)
    with Client(orchestrated.rpc_url, timeout_s=30) as client:
        client.create_automation(
            _on(
                "test.orchestrated.stuck",
                [
                    {"type": "cancel-flow-run"},
                    {
                        "type": "run-deployment",
                        "source": "selected",
                        "deployment_id": cleanup["id"],
                        "parameters": {
                            "run": {
                                "__prefect_kind": "jinja",
                                "template": "{{ event.resource.id }}",
                            },
                            "fixed": 3,
                        },
                    },
                ],
            )
        )
        client.emit([event_doc("test.orchestrated.stuck", f"prefect.flow-run.{flow_run['id']}")])

    def cancelling() -> bool:
        run = read_object(prefect_api, f"flow_runs/{flow_run['id']}")
        return run is not None and run["state_type"] == "CANCELLING"

    wait_for(cancelling, what="the flow run to be cancelling")

    def cleanup_runs() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = api_call(
            prefect_api,
            "POST",
            "flow_runs/filter",
            json={"flow_runs": {"deployment_id": {"any_": [cleanup["id"]]}}},
        )
        return found

    (created,) = wait_for(cleanup_runs, what="the cleanup deployment's run")
    assert created["parameters"] == {"run": f"prefect.flow-run.{flow_run['id']}", "fixed": 3}
