"""The house rules that a reviewer would otherwise check by hand."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Collection, Mapping
from itertools import pairwise
from pathlib import Path

import pytest

import marmot
from tests.typecheck_tree import build_tree, installed_python_files

REPO = Path(__file__).resolve().parents[1]

# Where each import in a graph is written: importer -> imported -> [(line, text), ...].
ImportGraph = dict[str, dict[str, list[tuple[int, str]]]]

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


@pytest.fixture(scope="module")
def installed_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed layout (marmot.engine, ...) as a folder to put on the path: make's tree."""
    dest = tmp_path_factory.mktemp("layout")
    build_tree(dest)
    return dest


def test_import_layers_hold(installed_layout: Path) -> None:
    # import-linter walks the installed layout, built from the folders by .ci/typecheck_tree.py.
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("lint-imports")),
            str(REPO / "pyproject.toml"),
        ],
        cwd=installed_layout,
        env={**os.environ, "PYTHONPATH": str(installed_layout)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# grimp finds a package through its import spec. This process imported marmot
# from the editable install, whose spec holds marmot/ alone, so the graph is
# built in a child process that finds marmot in the layout first.
_DUMP_IMPORT_GRAPH = """
import json, sys
import grimp
graph = grimp.build_graph(
    sys.argv[1], include_external_packages=False, exclude_type_checking_imports=False,
    cache_dir=None,
)
json.dump({
    importer: {
        imported: [
            (detail["line_number"], detail["line_contents"])
            for detail in graph.get_import_details(importer=importer, imported=imported)
        ]
        for imported in graph.find_modules_directly_imported_by(importer)
    }
    for importer in graph.modules
}, sys.stdout)
"""


def import_graph(package: str, path: Path) -> ImportGraph:
    """Every import between the modules of ``package`` found on ``path``, as grimp sees them.

    Imports under ``if TYPE_CHECKING:`` and inside functions count: each is a
    dependency someone may turn into a runtime import.
    """
    result = subprocess.run(
        [sys.executable, "-c", _DUMP_IMPORT_GRAPH, package],
        cwd=path,
        env={**os.environ, "PYTHONPATH": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    raw: ImportGraph = json.loads(result.stdout)  # each (line, text) arrives as a list
    return {
        importer: {
            imported: [(line, text) for line, text in details]
            for imported, details in imports.items()
        }
        for importer, imports in raw.items()
    }


def strongly_connected(graph: Mapping[str, Collection[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph``, each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for root in sorted(graph):
        if root in index:
            continue
        visit(root)
        work = [(root, iter(sorted(graph.get(root, ()))))]
        while work:  # iterative, so a long chain of imports cannot hit the recursion limit
            node, children = work[-1]
            for child in children:
                if child not in index:
                    visit(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return sorted(components)


def import_cycles(graph: Mapping[str, Collection[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others, each sorted."""
    return [
        component
        for component in strongly_connected(graph)
        if len(component) > 1 or component[0] in graph.get(component[0], ())
    ]


def shortest_cycle(start: str, graph: Mapping[str, Collection[str]]) -> list[str]:
    """The shortest chain of imports from ``start`` back to it: ``[start, ..., start]``."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, ())):
            if child == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise ValueError(f"{start} is on no import cycle")


def with_package_inits(graph: ImportGraph) -> dict[str, set[str]]:
    """Each module's imports, plus the packages whose ``__init__`` Python runs to import them.

    Importing ``p.q.m`` from outside ``p.q`` runs ``p/q/__init__.py`` first, so
    a package that re-exports from a module importing the importer closes a
    cycle that no single import statement shows.
    """
    dependencies = {importer: set(imports) for importer, imports in graph.items()}
    for importer, imports in graph.items():
        for imported in imports:
            parts = imported.split(".")
            for end in range(1, len(parts)):
                package = ".".join(parts[:end])
                if importer != package and not importer.startswith(package + "."):
                    dependencies[importer].add(package)
    return dependencies


def describe_cycle(members: list[str], graph: ImportGraph) -> str:
    """Name a cycle: its modules, and a chain of imports through each of them, line by line."""
    dependencies = with_package_inits(graph)
    lines = [f"import cycle among {len(members)} module(s): {', '.join(members)}"]
    covered: set[str] = set()
    for member in members:
        if member in covered:
            continue
        chain = shortest_cycle(member, dependencies)
        covered.update(chain)
        lines.append("  " + " -> ".join(chain))
        for importer, imported in pairwise(chain):
            if imported in graph[importer]:
                written = "; ".join(f"line {n}: {text}" for n, text in graph[importer][imported])
            else:
                inside = sorted(name for name in graph[importer] if name.startswith(imported + "."))
                written = f"importing {', '.join(inside)} runs {imported}'s __init__ first"
            lines.append(f"      {importer} -> {imported}  ({written})")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def marmot_imports(installed_layout: Path) -> ImportGraph:
    """Every import between marmot's modules in the installed layout."""
    return import_graph("marmot", installed_layout)


def test_import_graph_sees_every_module(marmot_imports: ImportGraph) -> None:
    # A module grimp does not see would escape the cycle check (a folder without __init__.py).
    expected = {
        path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for path in installed_python_files(REPO)
    }
    assert sorted(expected - set(marmot_imports)) == []


def test_no_import_cycles_anywhere_in_marmot(marmot_imports: ImportGraph) -> None:
    cycles = import_cycles(with_package_inits(marmot_imports))
    described = [describe_cycle(cycle, marmot_imports) for cycle in cycles]
    assert described == [], "\n\n" + "\n\n".join(described)


CYCLIC_PACKAGE = {
    # A submodule takes a name its package re-exports from it.
    "reexport/__init__.py": "from cyclic.reexport.models import Model\nVERSION = 1\n",
    "reexport/models.py": "from cyclic.reexport import VERSION\nModel = VERSION\n",
    # A type-only import closes the loop.
    "typed/__init__.py": "",
    "typed/a.py": "from cyclic.typed.b import B\nA = B\n",
    "typed/b.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from cyclic.typed.a import A\nB = 1\n"
    ),
    # A function-local import closes the loop.
    "local/__init__.py": "",
    "local/a.py": "from cyclic.local.b import run\n",
    "local/b.py": "def run() -> None:\n    from cyclic.local import a\n",
    # Importing inner.core runs inner/__init__.py, which leads back to outer.
    "outer.py": "from cyclic.inner.core import X\n",
    "inner/__init__.py": "from cyclic.inner.api import api\n",
    "inner/api.py": "import cyclic.outer\napi = 1\n",
    "inner/core.py": "X = 1\n",
    # Two modules on a chain with no way back, and three modules on one loop.
    "plain.py": "import cyclic.typed.a\nimport cyclic.local.b\n",
    "ring/__init__.py": "",
    "ring/one.py": "from cyclic.ring import two\n",
    "ring/two.py": "from cyclic.ring import three\n",
    "ring/three.py": "from cyclic.ring import one\n",
}


def test_cycle_check_sees_reexports_package_inits_type_checking_and_local_imports(
    tmp_path: Path,
) -> None:
    for name, text in {"__init__.py": "", **CYCLIC_PACKAGE}.items():
        (tmp_path / "cyclic" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cyclic" / name).write_text(text)
    graph = import_graph("cyclic", tmp_path)

    assert import_cycles(with_package_inits(graph)) == [
        ["cyclic.inner", "cyclic.inner.api", "cyclic.outer"],
        ["cyclic.local.a", "cyclic.local.b"],
        ["cyclic.reexport", "cyclic.reexport.models"],
        ["cyclic.ring.one", "cyclic.ring.three", "cyclic.ring.two"],
        ["cyclic.typed.a", "cyclic.typed.b"],
    ]
    ring = describe_cycle(["cyclic.ring.one", "cyclic.ring.three", "cyclic.ring.two"], graph)
    assert "cyclic.ring.one -> cyclic.ring.two -> cyclic.ring.three -> cyclic.ring.one" in ring
    typed = describe_cycle(["cyclic.typed.a", "cyclic.typed.b"], graph)
    assert "cyclic.typed.b -> cyclic.typed.a  (line 3: from cyclic.typed.a import A)" in typed
    hidden = describe_cycle(["cyclic.inner", "cyclic.inner.api", "cyclic.outer"], graph)
    assert "cyclic.inner -> cyclic.inner.api -> cyclic.outer -> cyclic.inner" in hidden
    assert "importing cyclic.inner.core runs cyclic.inner's __init__ first" in hidden
