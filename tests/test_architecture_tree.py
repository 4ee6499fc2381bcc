""".ci/typecheck_tree.py: the installed layout that mypy, import-linter and grimp read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.typecheck_tree import build_tree

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "typecheck_tree.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_tree_links_marmot_entries_and_the_mapped_folders(tmp_path: Path) -> None:
    package = build_tree(tmp_path)

    expected = {
        entry.name for entry in (REPO / "marmot").iterdir() if not entry.name.startswith(".")
    }
    assert {entry.name for entry in package.iterdir()} == expected | {
        "engine",
        "actors",
        "transport",
    }
    for folder in ("engine", "actors", "transport"):
        assert (package / folder).resolve() == REPO / folder
    assert (package / "__init__.py").resolve() == REPO / "marmot" / "__init__.py"
    assert not any(os.path.isabs(os.readlink(link)) for link in package.iterdir())


def test_rebuilding_replaces_a_stale_tree_and_keeps_the_tools_caches(tmp_path: Path) -> None:
    build_tree(tmp_path)
    (tmp_path / "marmot" / "moved_away.py").symlink_to(tmp_path / "nowhere.py")
    (tmp_path / ".mypy_cache").mkdir()

    assert run_script(str(tmp_path)).returncode == 0
    assert run_script(str(tmp_path)).returncode == 0

    assert not (tmp_path / "marmot" / "moved_away.py").is_symlink()
    assert (tmp_path / "marmot" / "engine" / "__init__.py").is_file()
    assert (tmp_path / ".mypy_cache").is_dir()
    assert (REPO / "engine" / "__init__.py").is_file()  # links removed, never followed


def test_tree_refuses_to_delete_a_folder_holding_real_files(tmp_path: Path) -> None:
    (tmp_path / "marmot").mkdir()
    (tmp_path / "marmot" / "work.py").write_text("kept = True\n")

    result = run_script(str(tmp_path))

    assert result.returncode == 1
    assert "work.py" in result.stderr
    assert (tmp_path / "marmot" / "work.py").read_text() == "kept = True\n"


def test_script_rejects_more_than_one_destination() -> None:
    result = run_script("one", "two")
    assert result.returncode == 2
    assert "usage" in result.stderr
