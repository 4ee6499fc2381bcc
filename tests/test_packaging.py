"""The built wheel installs what the editable install shows: every module, py.typed, the CLI.

An editable install maps whole folders, so a package missing from
pyproject.toml's ``packages`` list goes unnoticed until someone installs the
wheel. These tests build it once per session (a few seconds) and read it.
"""

from __future__ import annotations

import configparser
import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.typecheck_tree import installed_python_files

REPO = Path(__file__).resolve().parents[1]

# Top-level entries of the repository that the build never reads.
NOT_BUILT = {".git", ".venv", ".typecheck", "build", "dist", "tests", "bench", "data"}


def _not_copied(folder: str, names: list[str]) -> set[str]:
    skipped = {name for name in names if name == "__pycache__" or name.endswith(".egg-info")}
    if Path(folder) == REPO:
        skipped |= {name for name in names if name in NOT_BUILT or name.startswith(".")}
    return skipped


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built from a copy of the working tree, opened for reading."""
    # A copy, because setuptools reuses build/lib between builds (a stale copy of
    # a module would hide its absence) and writes into the tree it builds.
    source = tmp_path_factory.mktemp("source") / "marmot"
    shutil.copytree(REPO, source, ignore=_not_copied)
    out = tmp_path_factory.mktemp("wheel")
    # With build isolation: the build needs a newer setuptools than the venv's
    # (pyproject.toml's SPDX license string), and pip brings the one it declares.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("marmot-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = (path for path in wheel.namelist() if path.endswith(f".dist-info/{name}"))
    return wheel.read(path).decode()


def test_wheel_holds_every_module_of_the_source_tree(wheel: zipfile.ZipFile) -> None:
    missing = sorted(set(installed_python_files(REPO)) - set(wheel.namelist()))
    packages = sorted({path.rpartition("/")[0].replace("/", ".") for path in missing})
    assert missing == [], f"add {packages} to [tool.setuptools] packages in pyproject.toml"


def test_wheel_installs_nothing_beside_the_marmot_package(wheel: zipfile.ZipFile) -> None:
    top_level = {path.split("/")[0] for path in wheel.namelist()}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"marmot"}


def test_wheel_marks_the_package_typed(wheel: zipfile.ZipFile) -> None:
    assert "marmot/py.typed" in wheel.namelist()


def test_wheel_declares_the_marmot_console_script(wheel: zipfile.ZipFile) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
    assert entry_points["console_scripts"]["marmot"] == "marmot.cli:run"
    # ... and what it names is in the wheel, and callable.
    assert {"marmot/cli.py", "marmot/cli/__init__.py"} & set(wheel.namelist())
    assert callable(importlib.import_module("marmot.cli").run)


def test_no_bench_script_hides_an_installed_package(tmp_path: Path) -> None:
    """A script run as ``python bench/x.py`` has bench/ first on its path: a bench
    module named like a package (bench/prefect.py was one) hides it from every
    bench script, and bench/prefect_oracle.py could not import Prefect."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    names = sorted(script.stem for script in bench.glob("*.py"))
    # What each name is without bench/ on the path, as the interpreter finds it
    # from elsewhere (no repository folder, no PYTHONPATH).
    found = subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            "import importlib.util, sys\n"
            "for name in sys.argv[1:]:\n"
            "    spec = importlib.util.find_spec(name)\n"
            "    if spec is not None: print(name, spec.origin)",
            *names,
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.splitlines() == []
