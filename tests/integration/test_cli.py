"""The ``marmot`` command against a running daemon."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from marmot.cli import main
from marmot.transport.client import AsyncClient, Client
from tests.integration.harness import DaemonThread, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_automation_commands_round_trip(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ("--url", daemon.rpc_url)
    code, out, _ = _run(
        capsys, "automation", "create", "-f", str(EXAMPLES / "automations.yaml"), "--json", *url
    )
    assert code == 0
    created = [json.loads(line) for line in out.splitlines()]
    assert {a["name"] for a in created} >= {"deployment keeps failing", "run stuck in Running"}

    code, out, _ = _run(capsys, "automation", "ls", "--json", *url)
    listed = {json.loads(line)["name"] for line in out.splitlines()}
    assert "deploy then smoke test" in listed

    code, out, _ = _run(capsys, "automation", "inspect", "deployment keeps failing", *url)
    assert code == 0 and json.loads(out)["trigger"]["threshold"] == 3

    code, out, _ = _run(
        capsys,
        "emit",
        "--event",
        "prefect.flow-run.Failed",
        "--resource",
        "prefect.flow-run.cli-1",
        "--related",
        "deployment:prefect.deployment.cli",
        *url,
    )
    assert code == 0 and "emitted 1 event(s)" in out

    def one_bucket() -> bool:
        _, text, _ = _run(
            capsys, "automation", "explain", "deployment keeps failing", "--json", *url
        )
        return json.loads(text)["open_buckets"] == 1

    wait_for(one_bucket, what="the emitted event to open a bucket")
    code, out, _ = _run(capsys, "automation", "explain", "deployment keeps failing", *url)
    assert code == 0 and "1 open bucket(s)" in out
    assert "never fired (as far back as the event log goes)" in out and "None" not in out

    code, out, _ = _run(capsys, "automation", "pause", "deployment keeps failing", "--json", *url)
    assert code == 0 and json.loads(out)["enabled"] is False
    code, out, _ = _run(capsys, "automation", "resume", "deployment keeps failing", "--json", *url)
    assert code == 0 and json.loads(out)["enabled"] is True

    changed = tmp_path / "changed.yaml"
    changed.write_text(
        (EXAMPLES / "automations.yaml").read_text().replace("threshold: 3", "threshold: 4")
    )
    code, out, _ = _run(capsys, "automation", "update", "-f", str(changed), "--json", *url)
    assert code == 0
    with Client(daemon.rpc_url) as client:
        assert client.read_automation_by_name("deployment keeps failing").trigger.threshold == 4  # type: ignore[union-attr]

    for name in ("deployment keeps failing", "run stuck in Running", "deploy then smoke test"):
        code, _, _ = _run(capsys, "automation", "delete", name, *url)
        assert code == 0
    code, _, err = _run(capsys, "automation", "inspect", "deploy then smoke test", *url)
    assert code == 1 and "deploy then smoke test" in err


def test_emit_from_file_and_tail(daemon: DaemonThread, capsys: pytest.CaptureFixture[str]) -> None:
    url = ("--url", daemon.rpc_url)
    code, out, _ = _run(capsys, "emit", "-f", str(EXAMPLES / "events.jsonl"), "--json", *url)
    assert code == 0 and len(out.splitlines()) == 8
    code, out, _ = _run(
        capsys, "events", "tail", "-n", "3", "--event", "prefect.flow-run.*", "--json", *url
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3 and rows[0]["seq"] < rows[-1]["seq"]


def test_status_prints_capacity(daemon: DaemonThread, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "status", "--json", "--url", daemon.rpc_url)
    assert code == 0 and json.loads(out)["capacity"]["actor_limit"] > 0


def test_unreachable_daemon_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "status", "--url", "tcp://127.0.0.1:9", "--timeout", "0.5")
    assert code == 3
    assert "no Marmot daemon answers at tcp://127.0.0.1:9 (connection refused)" in err
    assert "marmot serve" in err


def test_bad_automation_file_exits_2(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ntrigger:\n  type: compound\n  require: 5\n  triggers:\n    - expect: [a]\n"
    )
    code, _, err = _run(capsys, "automation", "create", "-f", str(bad), "--url", daemon.rpc_url)
    assert code == 2 and f"{bad}:" in err and "require" in err


def test_automation_ls_lists_one_line_per_automation_as_the_full_listing_says(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = "summary-"
    documents = [
        {
            "name": f"{prefix}{k}",
            "tags": ["team-a"] if k % 2 else [],
            "trigger": {"type": "event", "expect": [f"summary.{k}"], "threshold": 1},
            "actions": [{"type": "do-nothing"}, {"type": "pause-automation", "source": "inferred"}],
        }
        for k in range(5)
    ]
    with Client(daemon.rpc_url) as client:
        client.create_automations(documents)
        client.pause_automation(client.read_automation_by_name(f"{prefix}3").id)
        full = client.list_automations(name_prefix=prefix)
        lines = client.list_automation_summaries(name_prefix=prefix)
        assert [
            (s.id, s.name, s.enabled, s.trigger, s.tags, s.updated, s.version) for s in lines
        ] == [(a.id, a.name, a.enabled, a.trigger.type, a.tags, a.updated, a.version) for a in full]
        assert lines[0].actions == ["do-nothing", "pause-automation"]
        assert [
            s.name for s in client.list_automation_summaries(name_prefix=prefix, tags=["team-a"])
        ] == [
            f"{prefix}1",
            f"{prefix}3",
        ]
        assert [
            s.name for s in client.list_automation_summaries(name_prefix=prefix, enabled=False)
        ] == [f"{prefix}3"]
        assert [
            s.name for s in client.list_automation_summaries(name_prefix=prefix, limit=2, offset=1)
        ] == [f"{prefix}1", f"{prefix}2"]

    async def listed_async() -> list[str]:
        async with AsyncClient(daemon.rpc_url) as client:
            return [s.name for s in await client.list_automation_summaries(name_prefix=prefix)]

    assert asyncio.run(listed_async()) == [f"{prefix}{k}" for k in range(5)]
    code, out, _ = _run(capsys, "automation", "ls", "--url", daemon.rpc_url)
    assert code == 0
    row = next(line for line in out.splitlines() if f"{prefix}3" in line)
    assert str(full[3].id) in row and "False" in row and "event" in row
