"""``marmot status`` while the daemon starts and once it serves: output and exit codes.

The command talks over real ZeroMQ to a real ``RpcServer`` answering as a
starting daemon (tests/transport/starting_server.py), which the test turns
into a serving one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from marmot.cli import EXIT_STARTING, EXIT_UNREACHABLE, main
from tests.transport.starting_server import SERVING, StartingServer, starting, unused_url


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _serve_after_health_calls(server: StartingServer, calls: int) -> None:
    """Make the server finish starting once it has answered ``health`` ``calls`` times."""
    starting_health = server.api.health
    answered = 0

    async def health(params: dict[str, Any]) -> dict[str, Any]:
        nonlocal answered
        answered += 1
        reply = await starting_health(params)
        if answered == calls:
            server.server.swap_handlers(SERVING)
        return reply

    server.on_loop(server.server.swap_handlers, {**server.api.handlers(), "health": health})


def test_a_starting_daemon_shows_its_progress_and_exits_4(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with starting(recovered=12, total=40) as server:
        code, out, _ = _run(capsys, "status", "--url", server.url)
    assert code == EXIT_STARTING == 4
    assert out.strip() == "starting — recovering automations 12/40 (8 s)"


def test_json_prints_the_raw_reply_with_the_same_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with starting(recovered=1, total=2) as server:
        code, out, _ = _run(capsys, "status", "--json", "--url", server.url)
    assert code == EXIT_STARTING
    reply = json.loads(out)
    assert reply["state"] == "starting" and reply["phase"] == "recovering_automations"
    assert (reply["automations_recovered"], reply["automations_total"]) == (1, 2)


def test_a_serving_daemon_shows_its_table_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with starting() as server:
        server.on_loop(server.server.swap_handlers, SERVING)
        code, out, _ = _run(capsys, "status", "--url", server.url)
    assert code == 0
    assert "marmot status" in out and "automations_loaded" in out and "serving" in out


def test_wait_polls_until_the_daemon_serves(capsys: pytest.CaptureFixture[str]) -> None:
    with starting() as server:
        _serve_after_health_calls(server, 3)
        code, out, _ = _run(capsys, "status", "--wait", "30", "--json", "--url", server.url)
    assert code == 0 and json.loads(out)["state"] == "serving"


def test_wait_without_seconds_uses_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with starting() as server:
        _serve_after_health_calls(server, 1)
        code, out, _ = _run(capsys, "status", "--url", server.url, "--wait")
    assert code == 0 and "automations_loaded" in out


def test_wait_that_runs_out_while_starting_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    with starting(recovered=5, total=40) as server:
        code, out, err = _run(capsys, "status", "--wait", "0.3", "--url", server.url)
    assert code == EXIT_STARTING
    assert "still starting after 0.3 s" in err
    assert "recovering automations 5/40" in out


def test_wait_for_a_daemon_that_never_answers_exits_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _run(
        capsys, "status", "--wait", "0.3", "--timeout", "0.2", "--url", unused_url()
    )
    assert code == EXIT_UNREACHABLE and "no reply" in err
