"""Every module sits on one floor: no module imports one that imports it back.

What uses a thing imports it, never the reverse.  The import graph of every
module under client/eventrouter and server/eventrouter is read from the
source with ``ast`` (nothing is imported) and must be acyclic.

What counts as an import of module B by module A:

- every ``import`` statement in A, wherever it is: at the top, under
  ``if TYPE_CHECKING:`` and inside functions.  A lazy import changes when B
  loads, not which module depends on which (``broker_factory`` importing the
  Redis broker inside a function while that broker imported its module was
  a circle all the same), and a TYPE_CHECKING import is a dependency that
  mypy and every reader follow;
- ``from P import name``: the submodule ``P.name`` when there is one, else
  the module ``P`` (a package means its ``__init__``).

Not counted: that importing ``a.b.c`` first runs ``a/__init__`` and
``a/b/__init__``.  A package's ``__init__`` re-exports its children, which
is the facade importing what it uses; counting the implicit parent run would
make every child and its facade a circle.

A circle is cut by moving the shared thing down to a module both can import
(``broker.factory``), or by having the lower module declare the little it
needs as a Protocol that the upper one satisfies (``ops.runtime.OperatedNode``).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (ROOT / "client", ROOT / "server")

# An import edge: the module imported and the line that imports it.
Edges = dict[str, dict[str, int]]


def find_modules(roots: Iterable[Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under each root's ``eventrouter``."""
    modules: dict[str, Path] = {}
    for root in roots:
        for path in sorted((root / "eventrouter").rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def imports_of(module: str, path: Path, known: Mapping[str, Path]) -> dict[str, int]:
    """The project modules ``module`` imports (see the module docstring), with a line each."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path.name == "__init__.py", node)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target in known and target != module:
                found.setdefault(target, node.lineno)
    return found


def import_graph(roots: Iterable[Path]) -> tuple[dict[str, Path], Edges]:
    modules = find_modules(roots)
    return modules, {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(edges: Edges) -> list[list[str]]:
    """One circle per group of modules that reach each other (Tarjan's components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_circle(group, edges) for group in groups]


def _circle(group: list[str], edges: Edges) -> list[str]:
    """A shortest way from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(edges[node]):
                if target not in members or target in came_from:
                    continue
                came_from[target] = node
                if target == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(target)
        frontier = following
    raise AssertionError(f"no circle through {start} in {group}")


def describe(circle: list[str], modules: Mapping[str, Path], edges: Edges) -> str:
    """One line per step of the circle: who imports whom, and where."""
    steps = []
    for here, there in itertools.pairwise(circle):
        path = modules[here]
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        steps.append(f"  {here} imports {there} ({where}:{edges[here][there]})")
    return "\n".join(steps)


def test_no_module_imports_one_that_imports_it_back() -> None:
    modules, edges = import_graph(SOURCE_ROOTS)
    found = cycles(edges)
    assert not found, "import circles (what uses a thing imports it, never the reverse):\n" + (
        "\n\n".join(describe(circle, modules, edges) for circle in found)
    )


def test_the_graph_sees_the_imports_it_must() -> None:
    modules, edges = import_graph(SOURCE_ROOTS)
    assert len(modules) > 50
    assert "eventrouter.server.ops.runtime" in edges["eventrouter.server.app"]
    # A lazy import (inside a function) counts.
    assert "eventrouter.server.broker.redis" in edges["eventrouter.server.broker.factory"]
    # `from package import name` is the package; `from package import module` the module.
    assert "eventrouter.server.config" in edges["eventrouter.server.ops.runtime"]
    assert "eventrouter.server.core.wire" in edges["eventrouter.server.broker.redis_watch"]


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_circles_through_type_checking_lazy_and_relative_imports_are_found(
    tmp_path: Path,
) -> None:
    _write(
        tmp_path,
        {
            "eventrouter/pkg/__init__.py": "from eventrouter.pkg.a import A\n",
            "eventrouter/pkg/a.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from eventrouter.pkg.b import B\nA = 1\n",
            "eventrouter/pkg/b.py": "def make():\n    from .c import C\n    return C\n",
            "eventrouter/pkg/c.py": "from . import a\nC = 1\n",
            # Importing eventrouter.pkg.a runs pkg/__init__ first: not a circle.
            "eventrouter/pkg/d.py": "from eventrouter.pkg.a import A\n",
        },
    )
    modules, edges = import_graph([tmp_path])
    assert edges["eventrouter.pkg.c"] == {"eventrouter.pkg.a": 1}
    assert edges["eventrouter.pkg.d"] == {"eventrouter.pkg.a": 1}
    [circle] = cycles(edges)
    assert circle == [
        "eventrouter.pkg.a",
        "eventrouter.pkg.b",
        "eventrouter.pkg.c",
        "eventrouter.pkg.a",
    ]
    assert f"eventrouter.pkg.b imports eventrouter.pkg.c ({tmp_path}/eventrouter/pkg/b.py:2)" in (
        describe(circle, modules, edges)
    )
