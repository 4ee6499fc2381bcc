"""Every shell and Python snippet of the README runs as written, in order, on a fresh
daemon (issue 17 #13).

The daemon is a ``DaemonThread`` of its own (a fresh data folder, its own Ray
namespace) on OS-chosen ports, which the snippets find the way a user's shell
does: through ``MARMOT_RPC_URL`` and ``MARMOT_INGEST_URL``, and ``marmot`` on
``PATH``. A snippet that cannot run here says so in the README itself, on the
line before it: ``<!-- not run by tests: the reason -->``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, make_config, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_NOT_RUN = re.compile(r"<!-- not run by tests: (.+?) -->\s*$")


@dataclass(frozen=True)
class Snippet:
    language: str
    code: str
    line: int
    skipped_because: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def snippets(text: str) -> list[Snippet]:
    """The README's ``sh`` and ``python`` blocks, in order, with their skip notes."""
    found = []
    for match in _FENCE.finditer(text):
        language = match.group(1)
        if language not in ("sh", "python"):
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        note = _NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 1
        found.append(Snippet(language, match.group(2), line, note.group(1) if note else None))
    return found


@pytest.fixture(scope="module")
def fresh_daemon(
    ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonThread]:
    config = make_config(
        tmp_path_factory.mktemp("readme"),
        **{"ray.namespace": f"marmot-readme-{uuid4().hex[:8]}"},
    )
    running = DaemonThread(config).start()
    yield running
    running.stop()


def _environment(daemon: DaemonThread) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARMOT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MARMOT_RPC_URL"] = daemon.rpc_url
    env["MARMOT_INGEST_URL"] = daemon.ingest_url
    env["COLUMNS"] = "160"
    return env


def _run(snippet: Snippet, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if snippet.language == "sh":
        argv = ["bash", "-euo", "pipefail", "-c", snippet.code]
    else:
        argv = [sys.executable, "-c", snippet.code]
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_readme_has_snippets_and_says_why_any_is_not_run() -> None:
    found = snippets(README.read_text(encoding="utf-8"))
    assert sum(s.skipped_because is None for s in found) >= 5
    for snippet in found:
        assert snippet.skipped_because is None or len(snippet.skipped_because) > 10, snippet


def test_every_readme_snippet_runs_in_order_on_a_fresh_daemon(fresh_daemon: DaemonThread) -> None:
    env = _environment(fresh_daemon)
    ran = []
    for snippet in snippets(README.read_text(encoding="utf-8")):
        if snippet.skipped_because is not None:
            continue
        run = _run(snippet, env)
        assert run.returncode == 0, (
            f"{snippet} failed with exit code {run.returncode}:\n"
            f"--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
        )
        assert "Traceback" not in run.stderr, f"{snippet}:\n{run.stderr}"
        ran.append(snippet)
    assert ran

    # The quick start and the Python example fire what they say they fire.
    with Client(fresh_daemon.rpc_url, timeout_s=30) as client:

        def fired(name: str) -> bool:
            triggered = client.filter_events(names=["prefect.automation.triggered"], limit=1000)
            return any(e["resource"].get("prefect.resource.name") == name for e in triggered)

        wait_for(lambda: fired("deployment keeps failing"), what="the quick start to fire")
        explained = subprocess.run(
            ["marmot", "automation", "explain", "deployment keeps failing"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "last fired " in explained and "related:deployment" in explained
        wait_for(lambda: fired("woodchonk"), what="the Python example to fire")
        # The webhook example logged its event (204).
        wait_for(
            lambda: client.filter_events(names=["model.trained"], limit=10),
            what="the webhook's event",
        )
