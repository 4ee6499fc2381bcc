"""``marmot admin`` and ``marmot incident`` against the session daemon."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from marmot.cli import main
from tests.integration.harness import DaemonThread

pytestmark = pytest.mark.integration


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_admin_checkpoint_and_backup(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ("--url", daemon.rpc_url)
    code, out, _ = _run(capsys, "admin", "checkpoint", "--json", *url)
    assert code == 0
    done = json.loads(out)
    assert set(done) == {
        "automations_checkpointed",
        "events_trimmed",
        "wal_pages",
        "wal_pages_copied",
    }
    target = tmp_path / "backup.db"
    code, out, _ = _run(capsys, "admin", "backup", str(target), *url)
    assert code == 0 and "backed up to" in out
    conn = sqlite3.connect(target)
    assert conn.execute("SELECT COUNT(*) FROM automations").fetchone()[0] >= 0
    conn.close()
    # A second backup to the same file is refused, with exit code 1.
    code, _, err = _run(capsys, "admin", "backup", str(target), *url)
    assert code == 1 and "exists" in err


def test_incident_commands_on_an_unknown_incident(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", daemon.rpc_url)
    code, _, _ = _run(capsys, "incident", "ls", "--json", *url)
    assert code == 0
    code, _, err = _run(capsys, "incident", "show", "00000000-0000-4000-8000-000000000000", *url)
    assert code == 1 and "no incident" in err
