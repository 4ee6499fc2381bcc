"""The house rules that a reviewer would otherwise check by hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import marmot

REPO = Path(__file__).resolve().parents[1]

PUBLIC = {
    "Automation", "CompoundTrigger", "EventTrigger", "Posture", "ResourceSpecification",
    "SequenceTrigger", "CallWebhook", "CancelFlowRun", "ChangeFlowRunState", "DeclareIncident",
    "DeleteFlowRun", "DoNothing", "PauseAutomation", "PauseDeployment", "PauseWorkPool",
    "PauseWorkQueue", "ResumeAutomation", "ResumeDeployment", "ResumeFlowRun", "ResumeWorkPool",
    "ResumeWorkQueue", "RunDeployment", "SendNotification", "SuspendFlowRun", "Client",
    "AsyncClient", "Publisher", "Evaluator", "Event", "Firing", "Replay", "Scenario",
    "TriggerState", "replay_scenario", "Conflict", "DaemonUnavailable", "LimitExceeded",
    "MarmotError", "NotFound", "Unauthorized", "ValidationFailed", "DeploymentTriggers",
    "PrefectDeploymentResolver", "apply_deployment_triggers", "load_deployment_triggers",
    "MetricTrigger", "MetricTriggerOperator", "MetricTriggerQuery", "PrefectMetric",
}  # fmt: skip


def test_public_api_is_exactly_the_documented_names() -> None:
    assert set(marmot.__all__) == PUBLIC
    for name in marmot.__all__:
        assert getattr(marmot, name) is not None


def test_engine_reads_no_wall_clock_and_does_no_io() -> None:
    forbidden = re.compile(
        r"^\s*(import|from)\s+(ray|zmq|httpx|sqlite3|socket|asyncio)\b"
        r"|datetime\.now\(|time\.time\(|time\.monotonic\(|open\("
    )
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in (REPO / "engine").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if forbidden.search(line)
    ]
    assert offenders == []


def test_import_layers_hold(tmp_path: Path) -> None:
    # import-linter walks the installed layout; build it from the folders.
    package = tmp_path / "marmot"
    package.mkdir()
    for entry in (REPO / "marmot").iterdir():
        (package / entry.name).symlink_to(entry)
    for folder in ("engine", "actors", "transport"):
        (package / folder).symlink_to(REPO / folder)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("lint-imports")),
            str(REPO / "pyproject.toml"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
