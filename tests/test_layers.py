"""No import circle anywhere in daq, drivers and simulators.

The layers contract (``lint-imports``) orders the top-level parts; this test covers what it
cannot see: circles between modules of one part (``daq.runs.export`` and
``daq.runs.signatures`` importing each other, say), function-level imports included. Imports
made only for the type checker count too: a circle only mypy sees is still a circle.
"""

from __future__ import annotations

import grimp

PACKAGES = ("daq", "drivers", "simulators")


def circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan's
    algorithm, iterative), each sorted, in name order; a module importing itself is one too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = len(index)
                    stack.append(other)
                    on_stack.add(other)
                    work.append((other, iter(sorted(graph.find_modules_directly_imported_by(other)))))
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == module:
                            break
                    if len(component) > 1 or module in graph.find_modules_directly_imported_by(module):
                        found.append(sorted(component))
    return sorted(found)


def test_the_circle_finder_finds_a_circle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "a.b", "a.c", "a.d", "a.e"):
        graph.add_module(name)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.d")
    graph.add_import(importer="a.d", imported="a.b")
    graph.add_import(importer="a.e", imported="a.b")
    assert circles(graph) == [["a.b", "a.c", "a.d"]]


def test_no_import_circle_among_the_modules() -> None:
    graph = grimp.build_graph(*PACKAGES)
    assert len(graph.modules) > 100, "the graph is (nearly) empty: nothing was analysed"
    found = circles(graph)
    chains = {
        " <-> ".join(c): graph.find_shortest_chain(importer=c[0], imported=c[1]) if len(c) > 1 else None
        for c in found
    }
    assert found == [], f"import circles (a shortest chain for each): {chains}"
