"""No import circle inside ``apps``: a module never reaches itself through its own imports."""

from __future__ import annotations

import grimp


def test_no_import_cycle_inside_apps() -> None:
    graph = grimp.build_graph("apps", include_external_packages=False)
    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                circles.append(" -> ".join((module, *back)))
    assert circles == [], "import circles in apps:\n" + "\n".join(circles)


def test_every_apps_folder_is_a_package_the_graph_sees() -> None:
    """A folder without ``__init__.py`` is a namespace package grimp skips: circles would hide."""
    from pathlib import Path

    import apps

    root = Path(apps.__file__).parent
    folders = {p.parent for p in root.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(root)) for f in folders if not (f / "__init__.py").exists())
    assert missing == []
