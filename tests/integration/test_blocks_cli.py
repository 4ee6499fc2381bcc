"""``marmot block`` against a running daemon: create, list, show, delete, and
secrets that never come back out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from marmot.cli import main
from marmot.engine.errors import Conflict, NotFound, ValidationFailed
from marmot.engine.models.blocks import BlockDocument
from marmot.transport.client import AsyncClient, Client
from tests.integration.harness import DaemonThread

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _secrets_in_examples() -> list[str]:
    document = yaml.safe_load((EXAMPLES / "blocks.yaml").read_text())
    found: list[str] = []
    for block in document["blocks"]:
        data = block["data"]
        found += [data[k] for k in ("url", "password") if k in data]
        found += list(data.get("headers", {}).values())
    return found


def test_block_commands_round_trip_without_showing_secrets(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", daemon.rpc_url)
    secrets = _secrets_in_examples()
    assert len(secrets) == 5

    code, out, err = _run(
        capsys, "block", "create", "-f", str(EXAMPLES / "blocks.yaml"), "--json", *url
    )
    assert code == 0, err
    created = [json.loads(line) for line in out.splitlines()]
    assert {(b["block_type_slug"], b["name"]) for b in created} == {
        ("slack-webhook", "ops"),
        ("ms-teams-webhook", "ops"),
        ("email", "on-call"),
        ("webhook", "incident-hook"),
    }

    code, out, _ = _run(capsys, "block", "ls", "--json", *url)
    listed = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {b["id"] for b in created} <= {b["id"] for b in listed}
    code, out, _ = _run(capsys, "block", "ls", "--type", "email", "--json", *url)
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["on-call"]
    code, table_out, _ = _run(capsys, "block", "ls", *url)
    assert code == 0 and "incident-hook" in table_out

    email_id = next(b["id"] for b in created if b["block_type_slug"] == "email")
    code, out, _ = _run(capsys, "block", "show", email_id, *url)
    shown = json.loads(out)
    assert code == 0
    assert shown["data"]["password"] == "********"
    assert shown["data"]["email_to"] == ["on-call@example.com", "platform-team@example.com"]

    code, out, _ = _run(capsys, "block", "show", "webhook/incident-hook", "--json", *url)
    assert code == 0
    assert json.loads(out)["data"]["headers"] == {"Authorization": "********"}

    everything_printed = " ".join(json.dumps(b) for b in created + listed) + out + table_out
    for secret in secrets:
        assert secret not in everything_printed

    for block in created:
        code, out, _ = _run(capsys, "block", "delete", block["id"], *url)
        assert code == 0 and block["id"] in out
    code, _, err = _run(capsys, "block", "show", email_id, *url)
    assert code == 1 and "no block" in err


def test_block_created_from_options_is_read_back_masked(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", daemon.rpc_url)
    code, out, err = _run(
        capsys,
        "block",
        "create",
        "--type",
        "webhook",
        "--name",
        "cli-hook",
        "--set",
        "url=https://hooks.example.com/cli-secret",
        "--set",
        "method=put",
        "--set",
        "headers.X-Token=12345",
        "--json",
        *url,
    )
    assert code == 0, err
    [created] = [json.loads(line) for line in out.splitlines()]
    assert created["data"]["method"] == "PUT"

    with Client(daemon.rpc_url) as client:
        read = client.read_block_by_name("webhook", "cli-hook")
        assert read.public_view()["data"]["url"] == "********"
        assert "cli-secret" not in repr(read)

        code, _, err = _run(
            capsys,
            "block",
            "create",
            "--type",
            "webhook",
            "--name",
            "cli-hook",
            "--set",
            "url=https://x.example",
            *url,
        )
        assert code == 1 and "already exists" in err

        code, _, _ = _run(capsys, "block", "delete", "webhook/cli-hook", *url)
        assert code == 0
        with pytest.raises(NotFound):
            client.read_block(read.id)


def test_block_errors_have_the_documented_exit_codes(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ("--url", daemon.rpc_url)

    code, _, err = _run(capsys, "block", "delete", "0f2a9c1e-0000-4000-8000-000000000000", *url)
    assert code == 1 and "no block with id" in err

    code, _, err = _run(capsys, "block", "show", "slack-webhook/nobody", *url)
    assert code == 1 and "no slack-webhook block named 'nobody'" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "blocks:\n  - block_type_slug: slack-webhook\n    name: Bad Name\n    data: {}\n"
    )
    code, _, err = _run(capsys, "block", "create", "-f", str(bad), *url)
    assert code == 2 and "bad.yaml" in err

    code, _, err = _run(capsys, "block", "show", "not-a-reference", *url)
    assert code == 2 and "TYPE/NAME" in err


def test_async_client_manages_blocks(daemon: DaemonThread) -> None:
    block = BlockDocument.model_validate(
        {
            "block_type_slug": "ms-teams-webhook",
            "name": "async-teams",
            "data": {"url": "https://example.logic.azure.com/workflows/async-secret"},
        }
    )

    async def main() -> None:
        async with AsyncClient(daemon.rpc_url) as client:
            created = await client.create_block(block)
            assert created.id == block.id and created.created is not None
            with pytest.raises(Conflict):
                await client.create_block(block)
            listed = await client.list_blocks("ms-teams-webhook")
            assert [b["name"] for b in listed] == ["async-teams"]
            assert "async-secret" not in json.dumps(listed)
            read = await client.read_block_by_name("ms-teams-webhook", "async-teams")
            assert read.public_view()["data"]["url"] == "********"
            with pytest.raises(ValidationFailed):
                # An unknown type is refused (pager-duty-webhook is known now).
                await client.call("blocks.filter", {"block_type_slug": "json"})
            await client.delete_block(created.id)
            with pytest.raises(NotFound):
                await client.read_block(created.id)

    asyncio.run(main())
