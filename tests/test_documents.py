"""Automation files: every problem named by file, line and field, said plainly."""

from __future__ import annotations

from pathlib import Path

import pytest

from marmot.documents import DocumentError, load_automations

FILE = """\
name: slow job
trigger:
  type: event
  expect: [job.failed]
  treshold: 3
  within: 1h
actions:
  - type: do-nothing
"""


def test_every_problem_is_listed_with_its_line_and_a_plain_reason(tmp_path: Path) -> None:
    path = tmp_path / "automation.yaml"
    path.write_text(FILE)
    with pytest.raises(DocumentError) as caught:
        load_automations(path)
    lines = caught.value.message.splitlines()
    assert len(lines) == 2, lines  # both problems, not "(and 1 more problem(s))"
    assert any(
        line.startswith(f"{path}:5: trigger.treshold: unknown field 'treshold'")
        and "did you mean 'threshold'?" in line
        for line in lines
    ), lines
    assert any(
        line.startswith(
            f"{path}:6: trigger.within: must be seconds (600), an ISO 8601 "
            "duration (PT10M) or HH:MM:SS"
        )
        and "'1h'" in line
        for line in lines
    ), lines
