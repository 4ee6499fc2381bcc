"""``marmot automation test|history|why`` against a real daemon."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from marmot.cli import main
from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, wait_for

pytestmark = pytest.mark.integration


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out.splitlines()[0])


def _event(name: str, resource: str, seconds: float = 0.0) -> dict[str, Any]:
    occurred = datetime.now(UTC) + timedelta(seconds=seconds)
    return {
        "id": str(uuid4()),
        "occurred": occurred.isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource, "env": "prod"},
    }


def _automation(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {
            "expect": ["job.failed"],
            "match": {"env": "prod"},
            "for_each": ["prefect.resource.id"],
            "threshold": 3,
            "within": 600,
        },
        "actions": [{"type": "do-nothing"}],
    }


def test_test_history_and_why_through_the_cli(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ("--url", daemon.rpc_url)
    name = f"why-{uuid4().hex[:8]}"
    resource = f"job.{uuid4().hex[:8]}"
    with Client(daemon.rpc_url) as client:
        automation = client.create_automation(_automation(name))
        first, second = _event("job.failed", resource), _event("job.failed", resource, 1)
        noise = _event("job.started", resource, 1)
        client.emit([first, second, noise])

        def counted() -> bool:
            buckets = client.explain(automation.id).triggers[0].buckets
            return bool(buckets) and buckets[0].count == 2

        wait_for(counted, what="two events counted")

    # A dry run of the third event: it would fire; nothing changes.
    third = _event("job.failed", resource, 2)
    event_file = tmp_path / "third.json"
    event_file.write_text(json.dumps(third))
    report = _json(capsys, "automation", "test", name, "--event", str(event_file), *url)
    assert report["state"] == "live"
    [verdict] = report["events"]
    assert verdict["fires"]
    [leaf] = verdict["triggers"]
    assert leaf["outcome"] == "fires" and leaf["before"]["count"] == 2
    assert [m["ok"] for m in leaf["match"]] == [True]
    with Client(daemon.rpc_url) as client:
        assert client.explain(automation.id).triggers[0].buckets[0].count == 2
        assert client.automation_history(automation.id).firings == []

    # The rich table shows each condition with its mark.
    code, out, _ = _run(capsys, "automation", "test", name, "--event", str(event_file), *url)
    assert code == 0 and "FIRES" in out and "match env" in out and "✓" in out

    # A file that is not stored runs on an empty state: it only counts.
    document = tmp_path / "draft.yaml"
    document.write_text(yaml.safe_dump(_automation(f"{name}-draft")))
    report = _json(capsys, "automation", "test", str(document), "--event", str(event_file), *url)
    assert report["state"] == "empty"
    assert report["events"][0]["triggers"][0]["reason"] == "counts towards 1 of 3"

    # An event whose id is in the log already would be dropped as a duplicate.
    again = tmp_path / "again.json"
    again.write_text(json.dumps(first))
    report = _json(capsys, "automation", "test", name, "--event", str(again), *url)
    assert report["events"][0]["triggers"][0]["because"] == "duplicate_id"

    # Logged events, by id and the last ones by name.
    report = _json(capsys, "automation", "test", name, "--event-id", noise["id"], *url)
    assert report["events"][0]["triggers"][0]["outcome"] == "not_routed"
    assert report["events"][0]["seq"] is not None
    report = _json(
        capsys, "automation", "test", name, "--last", "1", "--event-name", "job.fail*", *url
    )
    assert [e["event_id"] for e in report["events"]] == [second["id"]]

    # Now the third one for real: a firing, its action in the history.
    with Client(daemon.rpc_url) as client:
        client.emit([third])

        def fired() -> Any:
            history = client.automation_history(automation.id)
            done = history.firings and history.firings[0].actions
            return history if done and history.firings[0].actions[0].status != "claimed" else None

        history = wait_for(fired, what="the firing and its action in the history")
    [firing] = history.firings
    assert firing.labels == {"prefect.resource.id": resource}
    assert str(firing.triggering_event_id) == third["id"]
    assert firing.firing_id is not None
    [action] = firing.actions
    assert action.type == "do-nothing" and action.status == "executed"
    assert action.duration_s is not None and action.duration_s >= 0
    code, out, _ = _run(capsys, "automation", "history", name, "--since", "1h", *url)
    assert code == 0 and "1 firing(s)" in out and "do-nothing: executed" in out

    # Why: the first event counted into a bucket that later fired.
    why = _json(capsys, "automation", "why", name, "--event-id", first["id"], *url)
    assert why["status"] == "evaluated"
    assert why["verdict"]["triggers"][0]["outcome"] == "counts"
    [after] = why["aftermath"]
    assert after["what"] == "fired" and after["count"] == 3
    why = _json(capsys, "automation", "why", name, "--event-id", noise["id"], *url)
    assert why["status"] == "not_interesting"
    code, out, _ = _run(capsys, "automation", "why", name, "--event-id", first["id"], *url)
    assert code == 0 and "the bucket fired at" in out

    # A follower whose leader never came is held: not evaluated yet.
    follower = {**_event("job.failed", resource, 3), "follows": str(uuid4())}
    with Client(daemon.rpc_url) as client:
        client.emit([follower])
    why = _json(capsys, "automation", "why", name, "--event-id", follower["id"], *url)
    assert why["status"] == "not_evaluated" and "held for `follows`" in why["summary"]

    # An event that is not in the log is an error, with exit code 1.
    code, _, err = _run(capsys, "automation", "why", name, "--event-id", str(uuid4()), *url)
    assert code == 1 and "not in the event log" in err


def test_lint_through_the_cli_and_on_create(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ("--url", daemon.rpc_url)
    seen = f"lint.{uuid4().hex[:8]}.finished"
    with Client(daemon.rpc_url) as client:
        client.emit([{**_event(seen, "job.lint"), "resource": {"prefect.resource.id": "job.x"}}])
    typo = tmp_path / "typo.yaml"
    name = f"lint-{uuid4().hex[:8]}"
    typo.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "trigger": {
                    "posture": "Proactive",
                    "expect": [seen.replace("finished", "finishd")],
                    "for_each": ["prefect.resource.id"],
                },
                "actions": [{"type": "pause-deployment", "source": "inferred"}],
                "actions_on_resolve": [{"type": "do-nothing"}],
            }
        )
    )
    code, out, _ = _run(capsys, "automation", "lint", str(typo), "--json", *url)
    assert code == 0
    [report] = [json.loads(row) for row in out.splitlines()]
    assert report["log_checked"] and report["file"] == str(typo)
    by_check = {f["check"]: f for f in report["findings"]}
    assert by_check["unseen_name"]["suggestions"] == [seen]
    assert "proactive_within_floor" in by_check
    assert "resolve_without_resolved_states" in by_check  # the test daemon keeps them off
    # Its pause-deployment acts on a Prefect server; the test daemon has none.
    assert by_check["needs_orchestrator"]["path"] == "actions[0]"
    code, out, _ = _run(capsys, "automation", "lint", str(typo), *url)
    assert code == 0 and "did you mean" in out and seen in out

    # --strict: findings are errors; create writes nothing.
    code, _, err = _run(capsys, "automation", "lint", str(typo), "--strict", *url)
    assert code == 2 and "lint finding(s)" in err
    code, _, err = _run(capsys, "automation", "create", "-f", str(typo), "--strict", *url)
    assert code == 2 and "warning:" in err and "nothing written" in err
    with Client(daemon.rpc_url) as client:
        assert name not in {a.name for a in client.list_automations()}
    # Without --strict they are warnings and the automation is created.
    code, out, err = _run(capsys, "automation", "create", "-f", str(typo), "--json", *url)
    assert code == 0 and "warning:" in err and json.loads(out)["name"] == name
