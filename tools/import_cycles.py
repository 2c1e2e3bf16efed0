"""Fail when any two golive modules import each other, directly or round a longer loop — a package's __init__ and
its own modules included, which import-linter's sibling contract does not look at. Prints each loop with its edges.

    python tools/import_cycles.py            (run by `make lint`)
"""

from __future__ import annotations

import sys

import grimp


def loops(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        group.append(m)
                        if m == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def main() -> int:
    graph = grimp.build_graph("golive")
    bad = loops(graph)
    for group in bad:
        members = set(group)
        print(f"import loop between {len(group)} modules:")
        for m in group:
            for t in sorted(graph.find_modules_directly_imported_by(m) & members):
                lines = {d["line_number"] for d in graph.get_import_details(importer=m, imported=t)}
                print(f"  {m} -> {t} (line {', '.join(map(str, sorted(lines)))})")
    if not bad:
        print(f"no import loops among {len(graph.modules)} modules")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
