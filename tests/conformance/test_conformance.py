"""Every shared conformance scenario replays to exactly the firings Prefect produced."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from marmot.engine.models.triggers import has_proactive
from marmot.engine.replay import Scenario, load_automations, replay_scenario
from tests.conftest import conformance_dir

# The first set, `added/` (scenarios added later, with their own expected/), and
# this project's own, whose expected firings Prefect's engine produced (oracle/).
ORACLE = Path(__file__).parent / "oracle"
SCENARIOS = sorted(
    p
    for folder in (conformance_dir(), conformance_dir() / "added", ORACLE)
    for p in folder.glob("*.json")
    if (p.parent / "expected" / f"{p.stem}.jsonl").exists()
)


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    labels = json.dumps(row.get("labels") or {}, sort_keys=True)
    return (row["automation"], row.get("state", "Triggered"), labels, row.get("event_id"))


def _triggered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("state", "Triggered") != "Resolved"]


def test_the_shared_scenarios_are_present() -> None:
    assert len(SCENARIOS) >= 106, f"expected the shared scenarios in {conformance_dir()}"
    assert any(p.parent.name == "added" for p in SCENARIOS), "added/ is not covered"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_replay_reproduces_reference_firings(path: Path) -> None:
    scenario = Scenario.model_validate(json.loads(path.read_text()))
    expected = _triggered(
        [
            json.loads(line)
            for line in (path.parent / "expected" / f"{path.stem}.jsonl").open()
            if line.strip()
        ]
    )
    ours = _triggered([r.line() for r in replay_scenario(scenario)])
    tolerance = {
        a.name: scenario.tick_seconds if has_proactive(a.trigger) else 0.0
        for a in load_automations(scenario.automations, scope=scenario.name)
    }
    unmatched = list(ours)
    missing = []
    for row in expected:
        limit = tolerance.get(row["automation"], 0.0) + 1e-6
        for i, candidate in enumerate(unmatched):
            close = abs(_time(candidate["fired_at"]) - _time(row["fired_at"])) <= limit
            if _key(candidate) == _key(row) and close:
                unmatched.pop(i)
                break
        else:
            missing.append(row)
    assert not missing and not unmatched, f"missing {missing}\nextra {unmatched}"


# The rule scenarios of `added/` have whole-second deadlines, so the daemon's
# deadline schedule (tick 0: advance exactly at each deadline) gives Prefect's
# output too; a sweep scheduled even a microsecond late would not.
RULES = [p for p in SCENARIOS if p.parent.name == "added" and p.stem.startswith("rule-")]


def _timed(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*_key(row), row["fired_at"])


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_deadline_schedule_reproduces_rule_scenarios(path: Path) -> None:
    scenario = Scenario.model_validate(json.loads(path.read_text()))
    lines = (path.parent / "expected" / f"{path.stem}.jsonl").read_text().splitlines()
    expected = sorted(_timed(json.loads(line)) for line in lines if line.strip())
    ours = sorted(_timed(r.line()) for r in replay_scenario(scenario, tick=0))
    assert ours == expected
