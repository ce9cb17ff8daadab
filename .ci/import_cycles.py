"""Fail when modules of the given packages import each other in a cycle.

Run: python .ci/import_cycles.py crucible stages [--ignore-import "a.b -> a.c"]
grimp reads every import statement, at module level, inside functions and under TYPE_CHECKING.
An edge goes to the module an import names; the parent packages that Python initialises on the
way (``a/__init__.py`` for ``import a.b``) are not counted as imported.
"""

from __future__ import annotations

import argparse
import sys

import grimp


def find_cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """Every shortest cycle through each direct import, once, starting at its smallest module."""
    found: set[tuple[str, ...]] = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            cycle = (importer, *back[:-1])
            start = cycle.index(min(cycle))
            found.add(cycle[start:] + cycle[:start])
    return sorted(found)


def _edge(text: str) -> tuple[str, str]:
    importer, sep, imported = text.partition("->")
    if not sep or not importer.strip() or not imported.strip():
        raise argparse.ArgumentTypeError(f"expected 'importer -> imported', got {text!r}")
    return importer.strip(), imported.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("packages", nargs="+", help="top-level packages to analyse together")
    parser.add_argument(
        "--ignore-import",
        type=_edge,
        action="append",
        default=[],
        metavar="'IMPORTER -> IMPORTED'",
        help="leave out one direct import; it is an error if that import does not exist",
    )
    args = parser.parse_args(argv)
    graph = grimp.build_graph(*args.packages, cache_dir=None)
    problems = 0
    for importer, imported in args.ignore_import:
        known = importer in graph.modules and imported in graph.modules
        if known and graph.direct_import_exists(importer=importer, imported=imported):
            graph.remove_import(importer=importer, imported=imported)
        else:
            print(f"ignored import {importer} -> {imported} does not exist: stop ignoring it")
            problems += 1
    cycles = find_cycles(graph)
    for cycle in cycles:
        print("import cycle: " + " -> ".join((*cycle, cycle[0])))
    problems += len(cycles)
    modules = len(graph.modules)
    print(f"{modules} modules, {len(cycles)} import cycle{'s' if len(cycles) != 1 else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
