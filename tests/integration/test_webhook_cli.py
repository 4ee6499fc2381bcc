"""``marmot webhook`` against the session daemon: the URLs it prints take requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from marmot.cli import main
from marmot.transport.client import Client
from tests.integration.harness import DaemonThread

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"
STATIC = '{"event": "cli.hook.called", "resource": {"prefect.resource.id": "cli.hook"}}'


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_the_example_webhooks_are_created_listed_and_called(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", daemon.rpc_url)
    code, out, err = _run(
        capsys, "webhook", "create", "-f", str(EXAMPLES / "webhooks.yaml"), "--json", *url
    )
    assert code == 0, err
    created = {w["name"]: w for w in _rows(out)}
    assert set(created) == {
        "github",
        "recommendations-refreshed",
        "model-refreshed",
        "prefect-events",
    }
    assert created["prefect-events"]["enabled"] is False
    base = f"http://127.0.0.1:{daemon.config.http.port}/hooks/"
    assert all(w["url"] == base + w["slug"] for w in created.values())

    code, out, _ = _run(capsys, "webhook", "ls", *url)
    listed = out.splitlines()
    assert code == 0 and listed[0].endswith(" webhook(s)")
    assert any(row.split() == ["github", "enabled", created["github"]["url"]] for row in listed[1:])

    push = {
        "ref": "refs/heads/main",
        "repository": {"full_name": "acme/etl", "name": "etl"},
        "sender": {"login": "octocat"},
        "head_commit": {"id": "abc123", "message": "fix"},
    }
    reply = httpx.post(
        created["github"]["url"],
        json=push,
        headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"},
    )
    assert reply.status_code == 204
    form = httpx.post(created["model-refreshed"]["url"], data={"model": "churn"})
    assert form.status_code == 204
    assert httpx.get(created["recommendations-refreshed"]["url"]).status_code == 204
    assert httpx.post(created["prefect-events"]["url"], json={}).status_code == 404
    with Client(daemon.rpc_url) as client:
        [github] = client.filter_events(names=["github.push"])
        refreshed = client.filter_events(names=["model.refreshed"])
    assert github["resource"]["prefect.resource.id"] == "github.repo.acme/etl"
    assert github["resource"]["github.ref"] == "refs/heads/main"
    assert github["related"][0] == {
        "prefect.resource.id": "github.user.octocat",
        "prefect.resource.role": "sender",
    }
    assert github["payload"] == {"delivery": "d-1", "head_commit": push["head_commit"]}
    assert {e["resource"]["prefect.resource.name"] for e in refreshed} == {
        "churn",
        "Recommendations [Products]",
    }

    code, out, _ = _run(capsys, "webhook", "enable", "prefect-events", *url)
    assert code == 0 and "enabled" in out
    event = {"event": "cli.passed", "resource": {"prefect.resource.id": "cli.svc"}}
    assert httpx.post(created["prefect-events"]["url"], json=event).status_code == 204

    for name in created:
        code, out, _ = _run(capsys, "webhook", "delete", name, *url)
        assert code == 0 and f"deleted webhook {name}" in out


def test_one_webhook_from_options_through_every_command(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ("--url", daemon.rpc_url)
    template_file = tmp_path / "template.json"
    template_file.write_text(STATIC)
    code, out, err = _run(
        capsys,
        "webhook",
        "create",
        "cli-hook",
        "--template",
        f"@{template_file}",
        "--description",
        "from the CLI",
        "--disabled",
        "--json",
        *url,
    )
    assert code == 0, err
    [created] = _rows(out)
    assert (created["description"], created["enabled"]) == ("from the CLI", False)
    assert httpx.get(created["url"]).status_code == 404

    code, out, _ = _run(capsys, "webhook", "enable", "cli-hook", *url)
    assert code == 0 and created["url"] in out
    assert httpx.get(created["url"]).status_code == 204

    code, out, _ = _run(capsys, "webhook", "inspect", created["id"], *url)
    shown = json.loads(out)
    assert shown["template"] == STATIC and shown["url"] == created["url"]

    code, out, _ = _run(capsys, "webhook", "rotate", "cli-hook", "--json", *url)
    [rotated] = _rows(out)
    assert code == 0 and rotated["url"] != created["url"]
    assert httpx.get(created["url"]).status_code == 404
    assert httpx.get(rotated["url"]).status_code == 204

    code, out, _ = _run(
        capsys, "webhook", "update", "cli-hook", "--name", "cli-hook-2", "--description", "", *url
    )
    assert code == 0 and "cli-hook-2" in out

    changed = tmp_path / "changed.yaml"
    changed.write_text(
        "name: cli-hook-2\ndescription: from a file\nenabled: false\n"
        f"template: '{STATIC.replace('cli.hook.called', 'cli.hook.changed')}'\n"
    )
    code, out, _ = _run(capsys, "webhook", "update", "-f", str(changed), "--json", *url)
    [updated] = _rows(out)
    assert code == 0 and (updated["description"], updated["enabled"]) == ("from a file", False)
    assert updated["url"] == rotated["url"]

    code, out, _ = _run(capsys, "webhook", "disable", "cli-hook-2", "--json", *url)
    assert code == 0 and _rows(out)[0]["enabled"] is False
    code, _, _ = _run(capsys, "webhook", "delete", "cli-hook-2", *url)
    assert code == 0
    code, _, err = _run(capsys, "webhook", "inspect", "cli-hook-2", *url)
    assert code == 1 and "no webhook named 'cli-hook-2'" in err


def test_bad_input_exits_2_and_refusals_exit_1(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ("--url", daemon.rpc_url)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "webhooks:\n"
        "  - name: fine\n"
        f"    template: '{STATIC}'\n"
        "  - name: broken\n"
        "    template: '{{ body.x '\n"
    )
    code, _, err = _run(capsys, "webhook", "create", "-f", str(bad), *url)
    assert code == 2
    assert f"{bad}:5: webhooks[1].template:" in err.replace("\n", "")

    slugged = tmp_path / "slug.yaml"
    slugged.write_text(f"name: mine\nslug: my-own-url\ntemplate: '{STATIC}'\n")
    code, _, err = _run(capsys, "webhook", "create", "-f", str(slugged), *url)
    assert code == 2 and "slug" in err

    code, _, err = _run(capsys, "webhook", "create", "no-template", *url)
    assert code == 2 and "--template" in err
    code, _, err = _run(capsys, "webhook", "create", "x", "--template", "@/no/such/file", *url)
    assert code == 2 and "cannot read" in err

    code, _, _ = _run(capsys, "webhook", "create", "cli-twice", "--template", STATIC, *url)
    assert code == 0
    code, _, err = _run(capsys, "webhook", "create", "cli-twice", "--template", STATIC, *url)
    assert code == 1 and "already exists" in err
    code, _, _ = _run(capsys, "webhook", "delete", "cli-twice", *url)
    assert code == 0
