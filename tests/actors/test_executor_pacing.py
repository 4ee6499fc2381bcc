"""The executor's results stream is paced (issue 22): after a quiet spell a chunk
goes at once; what finishes within RESULTS_MIN_GAP_S of a chunk goes together in
the next one, so a steady flow of firings makes a few chunks (stream items and
action-log transactions) a second rather than one or two per firing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from marmot.actors import executor
from marmot.actors.executor import ExecutorResults
from tests.actors.test_executor import Harness, Scripted, automation, job_blob


def _events(results: list[ExecutorResults]) -> list[str]:
    return [e.event.rsplit(".", 1)[-1] for r in results for e in r.events]


def test_after_a_quiet_spell_a_chunk_goes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "RESULTS_MIN_GAP_S", 3600.0)

    async def main() -> list[str]:
        h = Harness(tmp_path, Scripted())
        await h.execute(job_blob(automation("do-nothing"), 1))
        # A lingering stream would hold it for the gap (next_results gives up after 10 s).
        chunk = await h.next_results()
        await h.host.close()
        return _events([chunk])[:1]

    assert asyncio.run(main()) == ["triggered"]


def test_what_finishes_within_the_gap_goes_together_in_the_next_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "RESULTS_MIN_GAP_S", 0.5)

    async def main() -> list[str]:
        h = Harness(tmp_path, Scripted())
        a = automation("do-nothing")
        await h.execute(job_blob(a, 1))
        await h.outcomes(1)  # the first firing's chunk(s): the gap starts
        for n in (2, 3, 4):
            await h.execute(job_blob(a, n))
        chunk = await h.next_results()  # once the gap is over: all of them
        await h.host.close()
        return sorted(_events([chunk]))

    assert asyncio.run(main()) == ["executed"] * 3 + ["triggered"] * 3


def test_the_results_gap_is_short() -> None:
    # Only the events reporting actions wait for it, never an action itself.
    assert 0 < executor.RESULTS_MIN_GAP_S <= 0.05
