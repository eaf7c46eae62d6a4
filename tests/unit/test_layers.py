"""The import graph follows the layers of the design: no circles, the seam at the bottom."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import underlay

PACKAGE = Path(underlay.__file__).parent


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "underlay"


class _Imports(ast.NodeVisitor):
    """Runtime imports of underlay modules (``if TYPE_CHECKING:`` blocks are types only)."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(a.name for a in node.names if a.name.split(".")[0] == "underlay")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        assert node.level == 0, "relative imports make the graph harder to read"
        if node.module == "underlay":
            for alias in node.names:  # `from underlay import events` imports a submodule
                sub = PACKAGE / alias.name
                is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                self.found.add(f"underlay.{alias.name}" if is_module else "underlay")
        elif node.module and node.module.split(".")[0] == "underlay":
            self.found.add(node.module)


def _graph() -> dict[str, set[str]]:
    """Return, per module of the package, the underlay modules it imports at run time."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[module] = visitor.found
    return graph


def _units() -> dict[str, set[str]]:
    units: dict[str, set[str]] = defaultdict(set)
    for module, imported in _graph().items():
        units[_unit(module)].update(_unit(i) for i in imported if _unit(i) != _unit(module))
    return units


def test_graph_sees_imports() -> None:
    """The checks below would pass on an empty graph: make sure it is not empty."""
    units = _units()
    assert "events" in units["repository"]
    assert "events" in units["database"]
    assert "events" in units["cache"]


def test_no_circle_between_subpackages() -> None:
    units = _units()
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> None:
        if state.get(unit) == "done":
            return
        assert state.get(unit) != "open", f"import circle: {' -> '.join([*path, unit])}"
        state[unit] = "open"
        for imported in sorted(units.get(unit, ())):
            visit(imported, [*path, unit])
        state[unit] = "done"

    for unit in sorted(units):
        visit(unit, [])


def test_repository_never_imports_database() -> None:
    offenders = {
        module: sorted(i for i in imported if _unit(i) == "database")
        for module, imported in _graph().items()
        if _unit(module) == "repository"
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_events_seam_is_at_the_bottom() -> None:
    """The seam imports no underlay module, so every layer may subscribe to it."""
    assert _graph()["underlay.events"] == set()


def test_database_and_repository_do_not_import_the_cache() -> None:
    code = (
        "import sys, underlay.database, underlay.repository, underlay.events\n"
        "print(sorted(m for m in sys.modules if m.startswith('underlay.cache')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_telemetry_costs_nothing_until_asked_for() -> None:
    """Importing the library (cache and all) never imports OpenTelemetry."""
    code = (
        "import sys, underlay, underlay.cache, underlay.repository, underlay.database\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'underlay.otel'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
