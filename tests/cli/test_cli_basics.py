"""The command line itself: help and version, files from stdin, broken pipes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from marmot.cli import main
from marmot.cli.events import _from_file
from marmot.documents import DocumentError


def test_marmot_alone_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: marmot" in out and "automation" in out and "--version" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    # What is installed, not a second copy of the number that could drift from it.
    assert capsys.readouterr().out.strip() == f"marmot {version('marmot')}"


def test_a_command_group_alone_says_which_verbs_it_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["automation"])
    assert caught.value.code == 2
    assert "usage: marmot automation" in capsys.readouterr().err


def test_emit_reads_standard_input_and_fills_in_id_and_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = '{"event": "x.y", "resource": {"prefect.resource.id": "r"}}\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(line))
    [event] = _from_file("-")
    assert event["id"] and event["occurred"]


def test_emit_names_every_bad_line_by_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"event": "ok", "resource": {"prefect.resource.id": "r"}}\n'
        "not json\n"
        '{"event": "x", "resource": {}}\n'
    )
    with pytest.raises(DocumentError) as caught:
        _from_file(str(path))
    lines = caught.value.message.splitlines()
    assert lines[0].startswith(f"{path}:2: not a JSON object")
    assert lines[1].startswith(f"{path}:3: resource")


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # `marmot ... | head -1`: the reader goes away; no BrokenPipeError traceback.
    script = "import sys\nfrom marmot.cli import main\nsys.exit(main(['replay', '--help']))\n"
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writer = subprocess.run(
        [sys.executable, "-c", script], stdout=reader.stdin, stderr=subprocess.PIPE, check=False
    )
    assert reader.stdin is not None
    reader.stdin.close()
    reader.wait()
    assert b"Traceback" not in writer.stderr


def test_with_no_daemon_a_command_fails_at_once_saying_how_to_start_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    began = time.monotonic()
    assert main(["automation", "ls", "--url", f"tcp://127.0.0.1:{port}"]) == 3
    err = capsys.readouterr().err
    assert "no Marmot daemon answers" in err and "marmot serve" in err
    assert time.monotonic() - began < 5  # not the 10 s time-out


def test_a_command_imports_its_own_module_only_and_help_lists_them_all() -> None:
    # `marmot automation ls` must not pay for importing the daemon's modules.
    script = (
        "import sys\nfrom marmot.cli import main\n"
        "try:\n    main(['automation', 'ls', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('marmot.cli.')))\n"
        "print('marmot.transport.orchestrator' in sys.modules)\n"
        "print(sorted({'httpx', 'jinja2', 'prometheus_client'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    loaded, orchestrator, heavy = done.stdout.strip().splitlines()[-3:]
    assert "'marmot.cli.automation'" in loaded
    assert "'marmot.cli.serve'" not in loaded and "'marmot.cli.admin'" not in loaded
    assert orchestrator == "False"
    # Nor the HTTP client, templates or metrics (a third of its start-up once).
    assert heavy == "[]"


def test_replay_prints_its_json_lines_without_importing_rich(tmp_path: Path) -> None:
    # rich is a tenth of `marmot replay`'s start-up, and replay prints JSON lines.
    scenario = tmp_path / "s.json"
    scenario.write_text(
        json.dumps(
            {
                "name": "one",
                "start": "2026-01-01T00:00:00Z",
                "until": "2026-01-01T00:01:00Z",
                "automations": [
                    {
                        "name": "a",
                        "trigger": {"type": "event", "expect": ["x"], "threshold": 1},
                        "actions": [{"type": "do-nothing"}],
                    }
                ],
                "events": [
                    {
                        "id": "0b7f0c9e-7a51-4d1e-9c3f-2a4e6d8b1c01",
                        "occurred": "2026-01-01T00:00:05Z",
                        "event": "x",
                        "resource": {"prefect.resource.id": "r"},
                    }
                ],
            }
        )
    )
    script = (
        "import sys\nfrom marmot.cli import main\n"
        f"code = main(['replay', {str(scenario)!r}])\n"
        "print(code, sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    firing, summary = done.stdout.strip().splitlines()[-2:]
    assert json.loads(firing)["automation"] == "a"
    assert summary == "0 []"


def test_an_unknown_command_is_refused_with_every_command_offered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["automaton", "ls"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'automaton'" in err
    assert all(name in err for name in ("serve", "automation", "backtest", "emit", "events"))
