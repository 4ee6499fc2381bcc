"""``marmot automation import --from-prefect`` and ``export`` against a real Prefect server.

Automations created on the server over its REST API (one as ``prefect
deploy`` creates a deployment trigger) arrive in Marmot equal in definition,
under the same ids; a second import changes nothing; ``--pause-source``
disables them on the server; an export loads with Prefect's own
``prefect automation create --from-file`` and comes back into Marmot unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from marmot.cli import main
from marmot.engine.models.automations import Automation
from marmot.transport.client import Client
from tests.integration.harness import DaemonThread
from tests.integration.prefect_server import (
    _prefect_command,
    api_call,
    create_deployment,
    read_object,
)

pytestmark = pytest.mark.integration

DEFINITION = set(Automation.model_fields) - {"enabled"}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(out: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in map(json.loads, out.splitlines())}


def _on_server(prefect_api: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api_call(prefect_api, "POST", "automations/filter", json={})
    return [a for a in found if a["name"].startswith(prefix)]


def _definition(document: dict[str, Any]) -> dict[str, Any]:
    automation = Automation.model_validate(
        {k: v for k, v in document.items() if k not in ("created", "updated", "version")}
    )
    return automation.model_dump(mode="json", include=DEFINITION)


def test_import_from_prefect_keeps_ids_and_definitions_then_pauses_the_source(
    prefect_api: str, daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prefix = f"imp-{uuid4().hex[:6]}"
    deployment = create_deployment(prefect_api)
    reactive = api_call(
        prefect_api,
        "POST",
        "automations/",
        json={
            "name": f"{prefix}-failures",
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": ["prefect.flow-run.Failed"],
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": 0,
            },
            "actions": [{"type": "cancel-flow-run"}],
        },
    )
    # What `prefect deploy` makes of a prefect.yaml trigger: owned by the deployment.
    trigger = api_call(
        prefect_api,
        "POST",
        "automations/",
        json={
            "name": f"{prefix}-deployment-trigger",
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": ["external.resource.pinged"],
                "match": {"prefect.resource.id": "my.external.resource"},
                "threshold": 1,
                "within": 0,
            },
            "actions": [
                {
                    "type": "run-deployment",
                    "source": "selected",
                    "deployment_id": deployment["id"],
                    "parameters": {"param_1": "{{ event }}"},
                }
            ],
            "owner_resource": f"prefect.deployment.{deployment['id']}",
        },
    )
    # Prefect takes names of any length; Marmot's stop at 512 characters.
    long_name = f"{prefix}-long-" + "x" * 600
    refused = api_call(
        prefect_api,
        "POST",
        "automations/",
        json={
            "name": long_name,
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": ["x.y"],
                "threshold": 1,
                "within": 0,
            },
            "actions": [{"type": "do-nothing"}],
        },
    )
    url = ("--url", daemon.rpc_url)
    source = ("--from-prefect", "--prefect-api-url", prefect_api, "--name", f"{prefix}-*")

    code, out, _ = _run(capsys, "automation", "import", *source, "--dry-run", "--json", *url)
    assert code == 1  # one refused
    rows = _rows(out)
    assert rows[f"{prefix}-failures"]["outcome"] == "created"
    with Client(daemon.rpc_url) as client:
        assert not [a for a in client.list_automations() if a.name.startswith(prefix)]

    code, out, err = _run(capsys, "automation", "import", *source, "--json", *url)
    assert code == 1
    rows = _rows(out)
    assert rows[f"{prefix}-failures"]["outcome"] == "created"
    assert rows[f"{prefix}-deployment-trigger"]["outcome"] == "created"
    assert rows[long_name]["outcome"] == "refused"
    assert rows[long_name]["field"] == "name"
    assert "512" in rows[long_name]["reason"]
    assert "both will act" in err
    with Client(daemon.rpc_url) as client:
        for source_doc in (reactive, trigger):
            copy = client.read_automation(source_doc["id"])
            assert str(copy.id) == source_doc["id"]
            assert _definition(copy.model_dump(mode="json")) == _definition(source_doc)
        # Prefect's OSS server keeps an owner as a relation its automation JSON does
        # not show: the copy has what the server says (None), and its action.
        owned = client.read_automation(trigger["id"])
        assert owned.owner_resource == trigger.get("owner_resource")
        assert owned.actions[0].model_dump(mode="json")["deployment_id"] == deployment["id"]

    code, out, _ = _run(capsys, "automation", "import", *source, "--pause-source", "--json", *url)
    rows = _rows(out)
    assert rows[f"{prefix}-failures"]["outcome"] == "unchanged"
    assert rows[f"{prefix}-deployment-trigger"]["outcome"] == "unchanged"
    assert rows[f"{prefix}-failures"]["source_paused"] is True
    for source_doc in (reactive, trigger):
        server_copy = read_object(prefect_api, f"automations/{source_doc['id']}")
        assert server_copy is not None and server_copy["enabled"] is False
    metric = read_object(prefect_api, f"automations/{refused['id']}")
    assert metric is not None and metric["enabled"] is True  # not imported, not paused
    with Client(daemon.rpc_url) as client:
        assert client.read_automation(reactive["id"]).enabled  # Marmot's copy acts

    # Once more: nothing changes, though the sources are now disabled.
    code, out, _ = _run(capsys, "automation", "import", *source, "--json", *url)
    assert {r["outcome"] for r in _rows(out).values()} == {"unchanged", "refused"}


def test_export_loads_with_prefects_cli_and_back_into_marmot_unchanged(
    prefect_api: str, daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = f"exp-{uuid4().hex[:6]}"
    with Client(daemon.rpc_url) as client:
        created = client.create_automation(
            {
                "name": name,
                "description": "stuck runs",
                "tags": ["ops"],
                "trigger": {
                    "type": "event",
                    "posture": "Proactive",
                    "after": ["prefect.flow-run.Running"],
                    "expect": ["prefect.flow-run.Completed", "prefect.flow-run.Failed"],
                    "for_each": ["prefect.resource.id"],
                    "threshold": 1,
                    "within": 60,
                },
                "actions": [{"type": "cancel-flow-run"}],
                "actions_on_resolve": [{"type": "do-nothing"}],
            }
        )
    for kind in ("yaml", "json"):
        path = tmp_path / f"export.{kind}"
        code, _, _ = _run(
            capsys, "automation", "export", name, "-o", str(path), "--url", daemon.rpc_url
        )
        assert code == 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "home"))
        done = subprocess.run(
            [_prefect_command(), "automation", "create", "--from-file", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        on_server = [a for a in _on_server(prefect_api, name)]
        assert on_server, "Prefect's CLI created nothing"
        loaded = on_server[-1]
        assert loaded["trigger"]["posture"] == "Proactive"
        assert loaded["trigger"]["within"] == 60
        assert [a["type"] for a in loaded["actions"]] == ["cancel-flow-run"]
        for made in on_server:
            api_call(prefect_api, "DELETE", f"automations/{made['id']}")

    # Back into Marmot: the exported file creates the same automation.
    path = tmp_path / "export.yaml"
    with Client(daemon.rpc_url) as client:
        client.delete_automation(created.id)
    code, _, err = _run(
        capsys, "automation", "create", "-f", str(path), "--json", "--url", daemon.rpc_url
    )
    assert code == 0, err
    with Client(daemon.rpc_url) as client:
        back = client.read_automation_by_name(name)
    assert back.model_dump(mode="json", include=DEFINITION | {"enabled"}) == created.model_dump(
        mode="json", include=DEFINITION | {"enabled"}
    )
