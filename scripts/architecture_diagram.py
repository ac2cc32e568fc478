"""Print the package-level import graph as a mermaid diagram, for docs/architecture.md.

The diagram is drawn from the code (grimp, the graph library behind import-linter), so it
cannot drift: ``tests/test_architecture.py`` checks that the page holds exactly this text.
Run ``python scripts/architecture_diagram.py`` and paste its output after a change.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

PACKAGES = (
    "pages",
    "core.cli",
    "core.services",
    "core.report",
    "core.learning",
    "core.cases",
    "core.imaging",
    "core.stats",
    "db",
    "core.common",
)
"""The layers of the import contract in pyproject.toml, top to bottom."""


def _package(module: str) -> str | None:
    """The listed package a module belongs to (the longest matching name)."""
    owners = [p for p in PACKAGES if module == p or module.startswith(p + ".")]
    return max(owners, key=len) if owners else None


def package_edges() -> list[tuple[str, str]]:
    """(importer, imported) for every pair of packages with at least one direct import."""
    graph = grimp.build_graph("core", "db", "pages")
    found = set()
    for module in graph.modules:
        importer = _package(module)
        for imported in map(_package, graph.find_modules_directly_imported_by(module)):
            if importer and imported and importer != imported:
                found.add((importer, imported))
    order = {name: i for i, name in enumerate(PACKAGES)}
    return sorted(found, key=lambda edge: (order[edge[0]], order[edge[1]]))


def mermaid() -> str:
    """The graph as a top-down mermaid flowchart, packages in contract order."""
    node = {name: name.replace(".", "_") for name in PACKAGES}
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'    {node[name]}["{name}"]' for name in PACKAGES]
    lines += [f"    {node[a]} --> {node[b]}" for a, b in package_edges()]
    lines.append("```")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(mermaid())
