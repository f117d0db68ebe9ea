"""No import circles inside our packages: each package's module graph is acyclic.

import-linter checks the layers between packages; this checks the modules inside each one,
so knots like `services ⇄ runtime` or `cli ⇄ service` cannot come back. Imports made only for
type checking (under ``if TYPE_CHECKING:``) are not edges at run time and are left out.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

PACKAGES = ["agent", "control_plane", "apps", "common", "serverkit", "k8s_operator"]
ROOT = Path(__file__).resolve().parent.parent


def _runtime_graph(package: str) -> dict[str, set[str]]:
    """Module → modules it imports at run time, within ``package``."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=False)
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        if module == package or not module.startswith(package + "."):
            continue
        edges[module] = {
            other
            for other in graph.find_modules_directly_imported_by(module)
            if other.startswith(package + ".")
        }
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
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
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside(package: str) -> None:
    """A module of ``package`` never reaches itself again through its run-time imports."""
    cycles = _cycles(_runtime_graph(package))
    assert cycles == [], "import circles: " + "; ".join(" ⇄ ".join(c) for c in cycles)


def test_cycle_finder_sees_a_circle() -> None:
    """The checker itself finds a two- and a three-module circle and passes a chain."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_folder_is_a_package_the_graph_sees(package: str) -> None:
    """A folder without ``__init__.py`` is a namespace package grimp skips: circles would hide."""
    root = ROOT / package
    folders = {p.parent for p in root.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert missing == []


def test_no_control_plane_service_reaches_the_runtime() -> None:
    """Services get collaborators in their constructors; only the assembler knows them all."""
    graph = grimp.build_graph("control_plane")
    users = graph.find_modules_that_directly_import("control_plane.runtime")
    assert not {m for m in users if m.startswith("control_plane.services")}
