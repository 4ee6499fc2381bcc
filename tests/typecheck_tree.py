"""The test suite's handle on ``.ci/typecheck_tree.py`` (a script, not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "typecheck_tree.py"

_spec = importlib.util.spec_from_file_location("marmot_typecheck_tree", SCRIPT)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

build_tree = _module.build_tree
installed_python_files = _module.installed_python_files
