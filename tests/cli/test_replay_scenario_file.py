"""``marmot replay SCENARIO.json`` reads plainly valid files in bulk, and anything
else the general way: the firings and the error messages are the same either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from marmot.cli import main

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "configs" / "examples" / "scenario-failing-runs.json"
)


def _replay(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["replay", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write(tmp_path: Path, document: dict[str, Any], name: str = "scenario.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_an_unusual_event_gives_the_same_firings_as_plain_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(EXAMPLE.read_text())
    code, plain, _ = _replay(EXAMPLE, capsys)
    assert code == 0 and plain.strip()
    # A naive timestamp is left to the model (which reads it as UTC): the file
    # is then read the general way, and must replay to the same firings.
    first = document["events"][0]
    assert first["occurred"].endswith("Z")
    first["occurred"] = first["occurred"].removesuffix("Z")
    code, general, _ = _replay(_write(tmp_path, document), capsys)
    assert code == 0
    assert general == plain


def test_a_bad_header_field_is_named_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(EXAMPLE.read_text())
    document["tick_seconds"] = -1
    code, _, err = _replay(_write(tmp_path, document), capsys)
    assert code != 0
    assert "tick_seconds" in err and "greater than or equal to 0" in err


def test_an_unknown_field_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = json.loads(EXAMPLE.read_text())
    document["tick"] = 1
    code, _, err = _replay(_write(tmp_path, document), capsys)
    assert code != 0
    assert "tick" in err and "Extra inputs are not permitted" in err


def test_a_missing_events_array_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(EXAMPLE.read_text())
    del document["events"]
    code, _, err = _replay(_write(tmp_path, document), capsys)
    assert code != 0
    assert "events" in err and "Field required" in err


def test_a_later_duplicate_key_wins_as_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLE.read_text().rstrip()
    assert text.endswith("}")
    # JSON readers keep the last of a repeated key: here, no events at all.
    path = tmp_path / "scenario.json"
    path.write_text(text[:-1] + ', "events": []}')
    code, out, _ = _replay(path, capsys)
    assert code == 0
    assert out.strip() == ""


def test_invalid_json_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scenario.json"
    path.write_text('{"name": "x",\n "events": [}')
    code, _, err = _replay(path, capsys)
    assert code != 0
    assert f"{path}:2" in err and "not valid JSON" in err
