#!/usr/bin/env python3
"""Build the installed layout of ``marmot`` as a tree of symlinks, for mypy and import-linter.

pyproject.toml's package-dir installs ``engine/``, ``actors/`` and
``transport/`` as ``marmot.engine``, ``marmot.actors`` and ``marmot.transport``.
Tools that read source files rather than import them need that layout on disk:
``DEST/marmot`` links every entry of ``marmot/`` and each mapped folder, and
``DEST`` goes on the path in place of the repository.

Usage: ``.ci/typecheck_tree.py [DEST]`` (default: ``.typecheck`` in the
repository). A tree already at ``DEST`` is replaced; the tools' caches beside
it are kept.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO / ".typecheck"
PACKAGE = "marmot"


class NotATree(Exception):
    """Raised when the folder to replace holds a real file or folder: it is not ours to delete."""


def package_dirs(repo: Path = REPO) -> dict[str, Path]:
    """Return pyproject.toml's package-dir: each installed package name and its source folder.

    Raises ``ValueError`` for a mapping this layout cannot express (anything but
    ``marmot`` itself and its direct subpackages).
    """
    with (repo / "pyproject.toml").open("rb") as file:
        mapping: dict[str, str] = tomllib.load(file)["tool"]["setuptools"]["package-dir"]
    for name in mapping:
        if name != PACKAGE and name.rpartition(".")[0] != PACKAGE:
            raise ValueError(f"package-dir maps {name!r}, not {PACKAGE!r} or a direct subpackage")
    return {name: repo / folder for name, folder in mapping.items()}


def installed_python_files(repo: Path = REPO) -> dict[str, Path]:
    """Return every Python file of the installed layout: its path there -> its source file.

    Paths are POSIX and relative to site-packages (``marmot/engine/clock.py``).
    Bytecode caches and hidden folders are not part of the layout.
    """
    files: dict[str, Path] = {}
    for name, folder in package_dirs(repo).items():
        prefix = name.replace(".", "/")
        for source in sorted(folder.rglob("*.py")):
            relative = source.relative_to(folder)
            if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
                continue
            files[f"{prefix}/{relative.as_posix()}"] = source
    return files


def build_tree(dest: Path, repo: Path = REPO) -> Path:
    """Replace ``dest/marmot`` with links that lay out the installed package; return that folder.

    Links are relative, so the tree keeps working if it moves along with the
    repository. Raises ``NotATree`` if ``dest/marmot`` holds anything but links.
    """
    package = dest / PACKAGE
    _remove_tree(package)
    package.mkdir(parents=True)
    mapped = package_dirs(repo)
    # The package's own entries, as the shell glob ``marmot/*`` lists them (no hidden ones) ...
    sources = [entry for entry in mapped.pop(PACKAGE).iterdir() if not entry.name.startswith(".")]
    links = {source.name: source for source in sources}
    # ... and each mapped folder under its installed name.
    links.update({name.rpartition(".")[2]: folder for name, folder in mapped.items()})
    for link, source in sorted(links.items()):
        (package / link).symlink_to(os.path.relpath(source, package))
    return package


def _remove_tree(package: Path) -> None:
    if package.is_symlink() or package.is_file():
        raise NotATree(f"{package} is not a folder of links; not removing it")
    if not package.exists():
        return
    strangers = sorted(entry.name for entry in package.iterdir() if not entry.is_symlink())
    if strangers:
        raise NotATree(f"{package} holds more than links ({', '.join(strangers)}); not removing it")
    shutil.rmtree(package)  # unlinks the links, never follows them


def main(argv: list[str]) -> int:
    """Build the tree at ``argv[0]`` (or the default); return the process's exit code."""
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(f"usage: {Path(__file__).name} [DEST]", file=sys.stderr)
        return 2
    try:
        build_tree(Path(argv[0]) if argv else DEFAULT_DEST)
    except (NotATree, ValueError) as error:
        print(f"{Path(__file__).name}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
