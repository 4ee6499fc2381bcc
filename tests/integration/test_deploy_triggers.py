"""A ``prefect.yaml``'s deployment triggers through the CLI, against a running daemon and a
real Prefect server: ids looked up on Prefect's API, automations owned by their deployment,
replaced (not duplicated) on every apply, and a matching event starting a flow run of the
deployment with parameters rendered from the event.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

import marmot
from marmot.cli import EXIT_FAILED, main
from marmot.engine.errors import NotFound
from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, event_doc, wait_for
from tests.integration.prefect_server import api_call, create_deployment

pytestmark = pytest.mark.integration


def prefect_yaml(tmp_path: Path, name: str, tag: str, triggers: str | None = None) -> Path:
    """A prefect.yaml deploying ``flows/etl.py:etl`` as ``name``, with Prefect's other
    sections, whose default triggers react to ``<tag>.pinged`` and ``<tag>.a/.b``."""
    default = f"""
      - match:
          prefect.resource.id: "{tag}.*"
        expect: ["{tag}.pinged"]
        parameters:
          who: "{{{{ event.resource.id }}}}"
          event: "{{{{ event }}}}"
          fixed: 3
      - require: any
        enabled: false
        schedule_after: PT2H
        triggers:
          - expect: ["{tag}.a"]
          - expect: ["{tag}.b"]
    """
    body = textwrap.indent(textwrap.dedent(triggers or default).strip("\n"), "      ")
    text = textwrap.dedent(
        f"""\
        name: warehouse
        prefect-version: 3.1.0
        build: null
        pull:
          - prefect.deployments.steps.set_working_directory:
              directory: "{{{{ $HOME }}}}/warehouse"
        deployments:
          - name: untriggered
            entrypoint: flows/other.py:other
          - name: {name}
            entrypoint: flows/etl.py:etl
            work_pool:
              name: nowhere
            triggers:
        """
    )
    path = tmp_path / "prefect.yaml"
    path.write_text(text + body + "\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["automation", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def owned(client: Client, deployment_id: str) -> list[dict[str, Any]]:
    owner = f"prefect.deployment.{deployment_id}"
    rows = client.list_automations()
    return [row.model_dump(mode="json") for row in rows if row.owner_resource == owner]


def runs_of(api: str, deployment_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api_call(
        api,
        "POST",
        "flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}},
    )
    return found


def test_deploy_triggers_looks_ids_up_replaces_on_reapply_and_runs_the_deployment(
    orchestrated: DaemonThread, prefect_api: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name, tag = f"etl-{uuid4().hex[:8]}", f"marmot.it.{uuid4().hex[:8]}"
    target = create_deployment(prefect_api, name=name, entrypoint="flows/etl.py:etl")
    # Another flow's deployment of the same name: the entrypoint tells them apart.
    decoy = create_deployment(prefect_api, name=name, entrypoint="flows/other.py:other")
    path = prefect_yaml(tmp_path, name, tag)
    argv = ["deploy-triggers", "-f", str(path), "--prefect-api-url", prefect_api]
    argv += ["--url", orchestrated.rpc_url, "--json"]

    code, out, err = run(capsys, *argv)
    assert code == 0, err
    (first,) = [json.loads(line) for line in out.splitlines()]
    assert first["deployment"] == name
    assert first["deployment_id"] == target["id"]
    assert first["owner_resource"] == f"prefect.deployment.{target['id']}"
    assert first["deleted"] == []
    assert [a["name"] for a in first["created"]] == [
        f"{name}__automation_1",
        f"{name}__automation_2",
    ]

    with Client(orchestrated.rpc_url, timeout_s=30) as client:
        stored = owned(client, target["id"])
        assert sorted(a["name"] for a in stored) == [
            f"{name}__automation_1",
            f"{name}__automation_2",
        ]
        for automation in stored:
            (action,) = automation["actions"]
            assert action["type"] == "run-deployment"
            assert (action["source"], action["deployment_id"]) == ("selected", target["id"])
        delayed = next(a for a in stored if a["trigger"]["type"] == "compound")
        assert delayed["enabled"] is False
        assert delayed["actions"][0]["schedule_after"] == "PT2H"

    code, out, err = run(capsys, *argv)
    assert code == 0, err
    (second,) = [json.loads(line) for line in out.splitlines()]
    assert sorted(second["deleted"]) == sorted(a["id"] for a in first["created"])

    with Client(orchestrated.rpc_url, timeout_s=30) as client:
        stored = owned(client, target["id"])
        assert sorted(a["id"] for a in stored) == sorted(a["id"] for a in second["created"])
        assert len(stored) == 2  # replaced, not duplicated
        for old in first["created"]:
            with pytest.raises(NotFound):
                client.read_automation(old["id"])
        assert owned(client, decoy["id"]) == []

        client.emit([event_doc(f"{tag}.pinged", f"{tag}.sensor-7")])

    (flow_run,) = wait_for(
        lambda: runs_of(prefect_api, target["id"]), what="a flow run of the deployment"
    )
    parameters = flow_run["parameters"]
    assert parameters["who"] == f"{tag}.sensor-7"
    assert parameters["fixed"] == 3
    assert parameters["event"]["event"] == f"{tag}.pinged"
    assert parameters["event"]["resource"]["prefect.resource.id"] == f"{tag}.sensor-7"
    assert runs_of(prefect_api, decoy["id"]) == []


def test_create_takes_a_prefect_yaml_and_empty_triggers_remove_the_automations(
    orchestrated: DaemonThread,
    prefect_api: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, tag = f"etl-{uuid4().hex[:8]}", f"marmot.it.{uuid4().hex[:8]}"
    target = create_deployment(prefect_api, name=name, entrypoint="flows/etl.py:etl")
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)  # what a Prefect user has set
    path = prefect_yaml(tmp_path, name, tag)
    url = ("--url", orchestrated.rpc_url)

    code, out, err = run(capsys, "create", "-f", str(path), "--json", *url)
    assert code == 0, err
    created = [json.loads(line) for line in out.splitlines()]
    assert {a["owner_resource"] for a in created} == {f"prefect.deployment.{target['id']}"}

    code, out, err = run(capsys, "create", "-f", str(path), *url)
    assert code == 0, err
    assert "created 2 automation(s) (replacing 2 owned by their deployments)" in out
    with Client(orchestrated.rpc_url, timeout_s=30) as client:
        assert len(owned(client, target["id"])) == 2

    path.write_text(path.read_text().split("    triggers:")[0] + "    triggers: []\n")
    code, out, err = run(capsys, "deploy-triggers", "-f", str(path), *url)
    assert code == 0, err
    assert "created 0 automation(s), deleted 2 they owned before" in out
    with Client(orchestrated.rpc_url, timeout_s=30) as client:
        assert owned(client, target["id"]) == []


def test_a_name_taken_by_an_automation_the_deployment_does_not_own_changes_nothing(
    orchestrated: DaemonThread, prefect_api: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name, tag = f"etl-{uuid4().hex[:8]}", f"marmot.it.{uuid4().hex[:8]}"
    deployment_id = str(uuid4())  # given explicitly: no lookup needed
    path = prefect_yaml(tmp_path, name, tag)
    argv = ["deploy-triggers", "-f", str(path), "--deployment-id", f"{name}={deployment_id}"]
    argv += ["--url", orchestrated.rpc_url]
    assert run(capsys, *argv)[0] == 0
    with Client(orchestrated.rpc_url, timeout_s=30) as client:
        before = sorted(a["id"] for a in owned(client, deployment_id))
        client.create_automation(
            {
                "name": f"{name}__automation_3",
                "trigger": {"expect": [f"{tag}.other"]},
                "actions": [{"type": "do-nothing"}],
            }
        )
    three = "\n".join(f"- expect: ['{tag}.{i}']" for i in range(3))
    prefect_yaml(tmp_path, name, tag, three)

    code, _, err = run(capsys, *argv)

    assert code == EXIT_FAILED
    assert f"automation name '{name}__automation_3'" in err and "does not own" in err
    with Client(orchestrated.rpc_url, timeout_s=30) as client:
        assert sorted(a["id"] for a in owned(client, deployment_id)) == before


def test_a_deployment_prefect_does_not_have_fails_with_the_reason(
    orchestrated: DaemonThread, prefect_api: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = f"never-deployed-{uuid4().hex[:8]}"
    path = prefect_yaml(tmp_path, name, "marmot.it.never")
    code, _, err = run(
        capsys,
        "deploy-triggers",
        "-f",
        str(path),
        "--prefect-api-url",
        prefect_api,
        "--url",
        orchestrated.rpc_url,
    )
    assert code == EXIT_FAILED
    assert (
        f"deployment '{name}' (entrypoint flows/etl.py:etl) not found on the Prefect API at "
        f"{prefect_api}: run `prefect deploy` first"
    ) in " ".join(err.split())


def test_the_python_api_loads_and_applies_a_prefect_yaml(
    orchestrated: DaemonThread, prefect_api: str, tmp_path: Path
) -> None:
    name, tag = f"etl-{uuid4().hex[:8]}", f"marmot.it.{uuid4().hex[:8]}"
    target = create_deployment(prefect_api, name=name, entrypoint="flows/etl.py:etl")
    path = prefect_yaml(tmp_path, name, tag)

    resolver = marmot.PrefectDeploymentResolver(prefect_api)
    loaded = marmot.load_deployment_triggers(path, resolver, deployments=[name])
    with marmot.Client(orchestrated.rpc_url, timeout_s=30) as client:
        (applied,) = marmot.apply_deployment_triggers(client, loaded)
        again = marmot.apply_deployment_triggers(client, loaded)

    assert applied.deployment.deployment_id == UUID(target["id"])
    assert [a.owner_resource for a in applied.created] == [f"prefect.deployment.{target['id']}"] * 2
    assert set(again[0].deleted) == {a.id for a in applied.created}
