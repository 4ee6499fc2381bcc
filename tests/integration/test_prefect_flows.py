"""Real flows on a real Prefect server, their events brought to Marmot by the bridge.

The flows run in a subprocess against the server, as a user's would; the
daemon's orchestrator defaults to the bridged server, so its actions act
where the events came from.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from marmot.cli import main
from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, make_config, wait_for
from tests.integration.prefect_events_server import PrefectServer
from tests.transport.notify_servers import MailServer

pytestmark = pytest.mark.integration

TERMINAL = [
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
]

# Prefect's documentation example of a notification on a flow run's state.
BODY = """Flow run {{ flow_run.name }} entered state {{ flow_run.state.name }}.

    Flow ID: {{ flow_run.flow_id }}
    Flow run ID: {{ flow_run.id }}
    State message: {{ flow_run.state.message }}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    running = PrefectServer(tmp_path_factory.mktemp("prefect-flows")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def bridged(
    ray_session: None, server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonThread]:
    config = make_config(
        tmp_path_factory.mktemp("flows"),
        **{
            "ray.namespace": f"marmot-test-{uuid4().hex[:8]}",
            "prefect.api_url": server.api,
            "prefect.reconnect_max_s": 1.0,
            "prefect.sync_automations": True,
            "prefect.sync_interval_s": 1.0,
        },
    )
    assert config.orchestrator.api_url == server.api  # defaults to the bridged server
    running = DaemonThread(config).start()
    yield running
    running.stop()


@pytest.fixture
def client(bridged: DaemonThread) -> Iterator[Client]:
    with Client(bridged.rpc_url, timeout_s=30.0) as connected:
        wait_for(
            lambda: connected.status()["prefect_bridge"]["state"] == "connected",
            60,
            "the bridge to connect",
        )
        yield connected


@pytest.fixture
def mail() -> Iterator[MailServer]:
    server = MailServer()
    yield server
    server.close()


def of_flow(name: str) -> dict[str, str]:
    """``match_related`` for the runs of the flow called ``name``."""
    return {"prefect.resource.role": "flow", "prefect.resource.name": name}


def flow_source(name: str, body: str) -> str:
    """A script that runs a flow called ``name`` doing ``body`` and prints its run's
    id and name first."""
    return f"""
from prefect import flow
from prefect.runtime import flow_run
import sys, time

@flow(name={name!r})
def job():
    print(flow_run.id, flow_run.name, flush=True)
    {body}

job()
"""


def test_a_completed_flow_run_is_mailed_with_prefects_example_text(
    server: PrefectServer, bridged: DaemonThread, client: Client, mail: MailServer
) -> None:
    flow_name = f"marmot-mailed-{uuid4().hex[:8]}"
    block = client.create_block(
        {
            "block_type_slug": "email",
            "name": f"mail-{uuid4().hex[:8]}",
            "data": {
                "smtp_server": "127.0.0.1",
                "smtp_port": mail.port,
                "smtp_type": "INSECURE",
                "email_from": "Marmot <marmot@example.com>",
                "email_to": ["ops@example.com"],
            },
        }
    )
    client.create_automation(
        {
            "name": "mail completed runs",
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": ["prefect.flow-run.Completed"],
                "match_related": of_flow(flow_name),
                "threshold": 1,
                "within": 0,
            },
            "actions": [
                {
                    "type": "send-notification",
                    "block_document_id": str(block.id),
                    "subject": "{{ flow_run.name }} is {{ flow_run.state.name }}",
                    "body": BODY,
                }
            ],
        }
    )
    body = "from prefect.states import Completed; return Completed(message='rows loaded: 42')"
    done = server.run_flow(flow_source(flow_name, body))
    run_id, run_name = done.stdout.split()[:2]
    flow_run = server.call("GET", f"flow_runs/{run_id}")
    assert flow_run["state_type"] == "COMPLETED"
    ((_, message),) = wait_for(lambda: mail.messages, 60, "the mail")
    text = message.get_payload(decode=True)
    body = text.decode() if isinstance(text, bytes) else str(message.get_payload())
    assert f"Flow run {run_name} entered state Completed." in body
    assert f"Flow ID: {flow_run['flow_id']}" in body
    assert f"Flow run ID: {run_id}" in body
    assert flow_run["state"]["message"] == "rows loaded: 42"
    assert "State message: rows loaded: 42" in body
    assert message["Subject"] == f"{run_name} is Completed"


def test_a_run_stuck_in_running_is_cancelled_by_a_proactive_automation(
    server: PrefectServer, bridged: DaemonThread, client: Client, tmp_path: Path
) -> None:
    flow_name = f"marmot-stuck-{uuid4().hex[:8]}"
    automation = client.create_automation(
        {
            "name": "cancel stuck runs",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "after": ["prefect.flow-run.Running"],
                "expect": TERMINAL,
                "for_each": ["prefect.resource.id"],
                "match_related": of_flow(flow_name),
                "threshold": 1,
                "within": 10,
            },
            "actions": [{"type": "cancel-flow-run"}],
        }
    )
    process = server.start_flow(flow_source(flow_name, "time.sleep(300)"))
    try:
        assert process.stdout is not None
        run_id = process.stdout.readline().split()[0]
        final = wait_for(
            lambda: (
                (run := server.call("GET", f"flow_runs/{run_id}"))["state_type"]
                in ("CANCELLING", "CANCELLED")
                and run
            ),
            60,
            "the run to be cancelled",
        )
        assert final["state_type"] in ("CANCELLING", "CANCELLED")
        executed = wait_for(
            lambda: _executed(client, str(automation.id)), 30, "the action.executed event"
        )
        assert executed
        # Written back: Prefect's event feed shows what Marmot did, in Prefect's shape.
        names = [
            "prefect.automation.triggered",
            "prefect.automation.action.triggered",
            "prefect.automation.action.executed",
        ]
        seen = wait_for(
            lambda: (
                (found := _on_prefect(server, str(automation.id)))
                and set(names) <= set(found)
                and found
            ),
            60,
            "Marmot's automation events on the Prefect server",
        )
        for name in names:
            assert seen[name]["resource"]["prefect.posture"] == "Proactive"
        assert (
            seen["prefect.automation.action.triggered"]["follows"]
            == (seen["prefect.automation.triggered"]["id"])
        )
        assert (
            seen["prefect.automation.action.executed"]["follows"]
            == (seen["prefect.automation.action.triggered"]["id"])
        )
        # The stream brings them back; the bridge knows them as its own.
        bridge = bridged.daemon.bridge
        assert bridge is not None and bridge.writeback is not None
        for event in seen.values():
            assert bridge.writeback.is_own(UUID(event["id"]))
    finally:
        process.kill()
        process.wait(30)


def _on_prefect(server: PrefectServer, automation_id: str) -> dict[str, dict[str, Any]]:
    """The automation's events the Prefect server stored, by name."""
    body = {
        "filter": {
            "resource": {"id": [f"prefect.automation.{automation_id}"]},
            "event": {"prefix": ["prefect.automation."]},
        },
        "limit": 50,
    }
    page = server.call("POST", "events/filter", json=body)
    return {event["event"]: event for event in page["events"]}


def _executed(client: Client, automation_id: str) -> list[dict[str, Any]]:
    rows = client.filter_events(names=["prefect.automation.action.executed"], limit=100)
    return [row for row in rows if automation_id in str(row)]


def test_a_prefect_yaml_deployment_trigger_runs_on_an_event_emitted_to_prefect(
    server: PrefectServer,
    bridged: DaemonThread,
    client: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"my-deployment-{uuid4().hex[:8]}"
    flow = server.call("POST", "flows/", json={"name": f"my-flow-{uuid4().hex[:8]}"})
    deployment = server.call(
        "POST",
        "deployments/",
        json={"name": name, "flow_id": flow["id"], "entrypoint": "flows/flow.py:my_flow"},
    )
    resource = f"my.external.resource.{uuid4().hex[:8]}"
    # The example of Prefect's documentation (its resource id made unique).
    (tmp_path / "prefect.yaml").write_text(
        textwrap.dedent(
            f"""\
            deployments:
              - name: {name}
                entrypoint: flows/flow.py:my_flow
                triggers:
                  - enabled: true
                    match:
                      prefect.resource.id: {resource}
                    expect:
                      - external.resource.pinged
                    parameters:
                      param_1: "{{{{ event }}}}"
            """
        )
    )
    code = main(
        [
            "automation",
            "deploy-triggers",
            "-f",
            str(tmp_path / "prefect.yaml"),
            "--prefect-api-url",
            server.api,
            "--url",
            bridged.rpc_url,
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    (applied,) = [json.loads(row) for row in out.splitlines()]
    (automation,) = applied["created"]

    event = {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "external.resource.pinged",
        "resource": {"prefect.resource.id": resource},
    }
    server.call("POST", "events", json=[event])  # to Prefect, not to Marmot

    def runs() -> list[dict[str, Any]]:
        body = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}
        found: list[dict[str, Any]] = server.call("POST", "flow_runs/filter", json=body)
        return found

    (flow_run,) = wait_for(runs, 60, "a flow run of the deployment")
    param = flow_run["parameters"]["param_1"]
    assert param["id"] == event["id"]
    assert param["event"] == "external.resource.pinged"
    assert param["resource"]["prefect.resource.id"] == resource
    # As Prefect's own automations do, the run names its creator.
    assert flow_run["created_by"]["type"] == "AUTOMATION"
    assert flow_run["created_by"]["id"] == automation["id"]
    assert flow_run["created_by"]["display_value"] == automation["name"]


def test_sync_automations_imports_the_servers_automations_and_pauses_them(
    server: PrefectServer, bridged: DaemonThread, client: Client
) -> None:
    name = f"synced-{uuid4().hex[:8]}"
    document = {
        "name": name,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["prefect.flow-run.Failed"],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 0,
        },
        "actions": [{"type": "cancel-flow-run"}],
    }
    source = server.call("POST", "automations/", json=document)

    def copied() -> Any:
        found = [a for a in client.list_automations() if a.name == name]
        return found and found[0]

    copy = wait_for(copied, 60, "the automation synced into Marmot")
    assert str(copy.id) == source["id"]
    assert copy.enabled
    wait_for(
        lambda: server.call("GET", f"automations/{source['id']}")["enabled"] is False,
        30,
        "the source paused on the server",
    )
    # `prefect deploy` recreates an automation under a new id and the same name:
    # Marmot's copy follows its new definition (under its id), the new one is paused.
    server.call("DELETE", f"automations/{source['id']}")
    recreated = server.call(
        "POST", "automations/", json={**document, "actions": [{"type": "suspend-flow-run"}]}
    )
    wait_for(
        lambda: client.read_automation(copy.id).actions[0].type == "suspend-flow-run",
        60,
        "the copy to follow the recreated automation",
    )
    wait_for(
        lambda: server.call("GET", f"automations/{recreated['id']}")["enabled"] is False,
        30,
        "the recreated source paused",
    )
    assert [a.id for a in client.list_automations() if a.name == name] == [copy.id]
