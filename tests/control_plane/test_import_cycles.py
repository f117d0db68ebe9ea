"""No import circle inside control_plane (services ⇄ runtime, switchboard ⇄ agent link, …)."""

from __future__ import annotations

import itertools

import grimp


def test_control_plane_has_no_import_cycle() -> None:
    graph = grimp.build_graph("control_plane", cache_dir=None)
    modules = sorted(graph.modules)
    circles = [
        (a, b)
        for a, b in itertools.combinations(modules, 2)
        if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)
    ]
    assert not circles, f"import circles: {circles}"


def test_no_service_reaches_the_runtime() -> None:
    graph = grimp.build_graph("control_plane", cache_dir=None)
    users = graph.find_modules_that_directly_import("control_plane.runtime")
    assert not {m for m in users if m.startswith("control_plane.services")}
