"""``marmot automation deploy-triggers`` failures that happen before the daemon is
contacted: each exits non-zero with a message saying what is wrong and where.

The commands succeeding against a daemon and a Prefect server are in
``tests/integration/test_deploy_triggers.py``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from marmot.cli import EXIT_FAILED, EXIT_USAGE, main

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "examples" / "prefect.yaml"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["automation", *argv])
    return code, capsys.readouterr().err


def test_a_bad_trigger_is_a_usage_error_naming_file_line_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text("deployments:\n  - name: etl\n    triggers:\n      - within: -5\n")
    code, err = _run(capsys, "deploy-triggers", "-f", str(path))
    assert code == EXIT_USAGE
    assert f"{path}:4: deployments[0].triggers[0].within:" in err


def test_the_default_file_is_prefect_yaml_in_the_working_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, "deploy-triggers")
    assert code == EXIT_USAGE
    assert "prefect.yaml: No such file or directory" in err


def test_an_unknown_deployment_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "deploy-triggers", "-f", str(EXAMPLE), "--deployment", "nightly")
    assert code == EXIT_USAGE
    assert "no deployment named 'nightly'" in err


def test_without_a_prefect_api_a_missing_id_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, err = _run(
        capsys,
        "deploy-triggers",
        "-f",
        str(EXAMPLE),
        "--deployment-id",
        "ingest=0f2a9c1e-3b4d-4e5f-8a6b-7c8d9e0f1a2b",
    )
    assert code == EXIT_USAGE
    assert "deployment 'report'" in err and "--deployment-id report=UUID" in err


def test_an_unreachable_prefect_api_fails_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        api = f"http://127.0.0.1:{unused.getsockname()[1]}/api"
    code, err = _run(capsys, "deploy-triggers", "-f", str(EXAMPLE), "--prefect-api-url", api)
    assert code == EXIT_FAILED
    assert f"could not look deployments up on the Prefect API at {api}" in err


def test_a_malformed_deployment_id_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["automation", "deploy-triggers", "--deployment-id", "ingest"])
    assert caught.value.code == EXIT_USAGE
    assert "expected NAME=UUID" in capsys.readouterr().err


def test_update_points_a_prefect_yaml_to_create(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "update", "-f", str(EXAMPLE))
    assert code == EXIT_USAGE
    assert "is a prefect.yaml" in err and "deploy-triggers" in err
