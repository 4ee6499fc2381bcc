"""``marmot backtest`` over a real daemon's event log: it agrees with ``marmot
replay`` on the same events and lines its firings up against the live ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from marmot.cli import main
from marmot.engine.models.backtest import BacktestJob
from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, wait_for

pytestmark = pytest.mark.integration


def _automation(name: str, expect: str) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {
            "expect": [expect],
            "for_each": ["prefect.resource.id"],
            "threshold": 2,
            "within": 5,
        },
        "actions": [{"type": "do-nothing"}],
    }


def _events(expect: str, start: datetime) -> list[dict[str, Any]]:
    # Two resources reach the threshold (one of them in two windows), one does not.
    plan = [("a", 0), ("b", 1), ("a", 2), ("c", 3), ("b", 4), ("a", 6), ("a", 7)]
    return [
        {
            "id": str(uuid4()),
            "occurred": (start + timedelta(seconds=s)).isoformat(),
            "event": expect,
            "resource": {"prefect.resource.id": f"job.{key}"},
        }
        for key, s in plan
    ]


def _finished(client: Client, job: BacktestJob) -> BacktestJob:
    def done() -> BacktestJob | None:
        current = client.read_backtest(job.id)
        return current if current.state != "running" else None

    return wait_for(done, timeout_s=120, what="the backtest to finish")


def test_backtest_agrees_with_replay_and_the_live_automation(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    expect = f"bt.{uuid4().hex[:8]}.failed"
    name = f"live-{expect}"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    with Client(daemon.rpc_url) as client:
        live = client.create_automation(_automation(name, expect))
        sent = _events(expect, start)
        client.emit(sent)
        wait_for(
            lambda: len(client.automation_history(live.id).firings) == 3,
            what="the live automation's three firings",
        )
        # The history reads in pages, newest first.
        first_page = client.automation_history(live.id, limit=2)
        assert len(first_page.firings) == 2 and first_page.next is not None
        rest = client.automation_history(live.id, limit=2, cursor=first_page.next)
        assert len(rest.firings) == 1 and rest.next is None
        times = [f.fired_at for f in first_page.firings + rest.firings]
        assert times == sorted(times, reverse=True)
        since, until = start - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1)
        draft = _automation("draft", expect)
        job = client.start_backtest([draft], since, until)
        assert job.state == "running"
        report = _finished(client, job).report
        assert report is not None
        logged = client.filter_events(since=since, until=until, limit=10_000, by_arrival=True)

    ours = [f for f in report.firings if f.automation == "draft"]
    # All arrived at once: the firings share a fired_at, ordered by key (SEMANTICS §7).
    fired = {(f.labels["prefect.resource.id"], str(f.event_id)) for f in ours}
    assert fired == {("job.a", sent[2]["id"]), ("job.b", sent[4]["id"]), ("job.a", sent[6]["id"])}
    assert {k.labels["prefect.resource.id"]: k.firings for k in report.per_key} == {
        "job.a": 2,
        "job.b": 1,
    }

    # `marmot replay` over the same events (from the log, in arrival order) agrees.
    events_file = tmp_path / "events.jsonl"
    rows = sorted(logged, key=lambda e: e["seq"])
    lines = [json.dumps({k: v for k, v in e.items() if k != "seq"}) + "\n" for e in rows]
    events_file.write_text("".join(lines))
    automation_file = tmp_path / "draft.yaml"
    automation_file.write_text(yaml.safe_dump(draft))
    code = main(
        [
            "replay",
            "--automations",
            str(automation_file),
            "--events",
            str(events_file),
            "--start",
            since.isoformat(),
            "--until",
            until.isoformat(),
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    replayed = [json.loads(line) for line in out.splitlines()]
    backtested = [
        {**f.model_dump(mode="json", exclude={"automation"}), "automation": f.automation}
        for f in report.firings
    ]
    normalise = [
        (r["automation"], r["state"], r["labels"], r["event_id"], r["fired_at"][:19])
        for r in replayed
    ]
    assert normalise == [
        (b["automation"], b["state"], b["labels"], b["event_id"], b["fired_at"][:19])
        for b in backtested
    ]

    # Through the CLI, compared with the live automation: nothing differs.
    automation_file.write_text(yaml.safe_dump(_automation(f"draft-{expect}", expect)))
    code = main(
        [
            "backtest",
            "-f",
            str(automation_file),
            "--since",
            "1h",
            "--compare",
            name,
            "--json",
            "--url",
            daemon.rpc_url,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    compared = json.loads(out.splitlines()[-1])["comparison"]
    assert compared["live_firings"] == 3 and compared["matched"] == 3
    assert compared["only_backtest"] == [] and compared["only_live"] == []

    code = main(["backtest", "-f", str(automation_file), "--since", "1h", "--url", daemon.rpc_url])
    captured = capsys.readouterr()
    assert code == 0 and "firings per key" in captured.out
    assert "events" in captured.err  # the progress line
