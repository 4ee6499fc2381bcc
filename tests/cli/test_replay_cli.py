"""``marmot replay`` from the command line: scenarios, backtests and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marmot.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_scenario_replay_prints_sorted_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(EXAMPLES / "scenario-failing-runs.json")]) == 0
    rows = _lines(capsys.readouterr().out)
    assert [r["automation"] for r in rows] == ["deployment keeps failing", "run stuck in Running"]
    assert rows[0]["labels"] == {"related:deployment:prefect.resource.id": "prefect.deployment.etl"}
    assert rows[1]["fired_at"] == "2026-05-04T08:01:10Z"


def test_backtest_prints_json_lines_with_daemon_schedule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "replay",
            "--automations",
            str(EXAMPLES / "automations.yaml"),
            "--events",
            str(EXAMPLES / "events.jsonl"),
            "--json",
        ]
    )
    assert code == 0
    rows = _lines(capsys.readouterr().out)
    names = sorted({str(r["automation"]) for r in rows})
    assert names == ["deployment keeps failing", "run stuck in Running"]
    stuck = [r for r in rows if r["automation"] == "run stuck in Running"]
    # a3 started at 08:00:30 and never finished: it fires exactly 30 s later.
    assert {"fired_at": "2026-05-04T08:01:00Z"}.items() <= stuck[0].items()


def test_backtest_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "replay",
            "--automations",
            str(EXAMPLES / "automations.yaml"),
            "--events",
            str(EXAMPLES / "events.jsonl"),
        ]
    )
    assert code == 0
    assert "2 firing(s) from 8 event(s)" in capsys.readouterr().out


def test_bad_event_line_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"occurred": "2026-05-04T08:00:00Z", "event": "x",'
        ' "resource": {"prefect.resource.id": "r"}}\n'
        '{"occurred": "not a time", "event": "x", "resource": {"prefect.resource.id": "r"}}\n'
    )
    code = main(
        ["replay", "--automations", str(EXAMPLES / "automations.yaml"), "--events", str(events)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{events}:2" in err and "occurred" in err


def test_bad_automation_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    automations = tmp_path / "a.yaml"
    automations.write_text(
        "name: broken\ntrigger:\n  type: event\n  posture: Proactive\n  within: 5\nactions: []\n"
    )
    code = main(
        ["replay", "--automations", str(automations), "--events", str(EXAMPLES / "events.jsonl")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{automations}:" in err and "10 seconds" in err


def test_missing_arguments_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay"]) == 2
    assert "SCENARIO" in capsys.readouterr().err


def test_negative_tick_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--tick", "-1", str(EXAMPLES / "scenario-failing-runs.json")]) == 2


def test_backtest_with_resolved_states(capsys: pytest.CaptureFixture[str]) -> None:
    files = ["--automations", str(EXAMPLES / "automations.yaml")]
    files += ["--events", str(EXAMPLES / "events.jsonl")]
    assert main(["replay", *files, "--json"]) == 0
    plain = _lines(capsys.readouterr().out)
    assert {r["state"] for r in plain} == {"Triggered"}

    assert main(["replay", *files, "--json", "--resolved"]) == 0
    rows = _lines(capsys.readouterr().out)
    # The same firings, plus the reactive one resolving as its 60 s window
    # closes; the stuck run never finished, so it stays open.
    assert [r for r in rows if r["state"] == "Triggered"] == plain
    [resolved] = [r for r in rows if r["state"] == "Resolved"]
    assert resolved["automation"] == "deployment keeps failing"
    assert resolved["labels"] == plain[0]["labels"]
    assert resolved["fired_at"] == "2026-05-04T08:01:09Z"

    assert main(["replay", *files, "--resolved"]) == 0
    assert "2 firing(s), 1 resolved from 8 event(s)" in capsys.readouterr().out


def test_scenarios_refuse_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(EXAMPLES / "scenario-failing-runs.json"), "--resolved"]) == 2
    assert "--resolved" in capsys.readouterr().err


def test_backtest_of_a_metric_automation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    automations = tmp_path / "slow.yaml"
    automations.write_text(
        "name: slow runs\n"
        "trigger:\n"
        "  posture: Metric\n"
        "  match: {prefect.resource.id: prefect.flow-run.*}\n"
        "  metric: {name: duration, operator: '>', threshold: 60, range: PT10M}\n"
        "actions: []\n"
    )
    run = '"resource": {"prefect.resource.id": "prefect.flow-run.1"}'
    events = tmp_path / "runs.jsonl"
    events.write_text(
        f'{{"id": "{"1" * 8}-0000-4000-8000-{"0" * 12}", "occurred": "2026-05-04T08:00:00Z",'
        f' "event": "prefect.flow-run.Running", {run}}}\n'
        f'{{"id": "{"2" * 8}-0000-4000-8000-{"0" * 12}", "occurred": "2026-05-04T08:01:40Z",'
        f' "event": "prefect.flow-run.Completed", {run}}}\n'
    )
    files = ["--automations", str(automations), "--events", str(events), "--json"]
    assert main(["replay", *files]) == 0
    # 100 s is over 60 s from 08:01:40; it stays so for firing_for (5 min).
    assert _lines(capsys.readouterr().out) == [
        {
            "automation": "slow runs",
            "state": "Triggered",
            "labels": {},
            "event_id": "22222222-0000-4000-8000-000000000000",
            "fired_at": "2026-05-04T08:06:40Z",
        }
    ]

    # The run leaves the 10-minute window at 08:11:40; 5 minutes later it has
    # recovered, within the default end (last event + range + firing_for).
    assert main(["replay", *files, "--resolved"]) == 0
    rows = _lines(capsys.readouterr().out)
    assert [(r["state"], r["fired_at"]) for r in rows] == [
        ("Triggered", "2026-05-04T08:06:40Z"),
        ("Resolved", "2026-05-04T08:16:40Z"),
    ]
