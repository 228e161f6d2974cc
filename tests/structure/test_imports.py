"""The package graph stays a DAG with no reach into another module's private names.

Every import counts, at module level or inside a function (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "builder"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules: dict[str, Path]) -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, imported name or None)} over builder.* only."""
    found: dict[str, set[tuple[str, str | None]]] = {}
    for name, path in modules.items():
        edges: set[tuple[str, str | None]] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {(alias.name, None) for alias in node.names if alias.name.startswith("builder")}
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                if not target.startswith("builder"):
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    edges.add((submodule, None) if submodule in modules else (target, alias.name))
        found[name] = {edge for edge in edges if edge[0] != name}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles_between_modules() -> None:
    modules = _modules()
    imports = _imports(modules)
    # A package's __init__ that re-exports its own modules is not a cycle with them.
    graph = {
        name: {target for target, _ in edges if target in modules and not name.startswith(target + ".")}
        for name, edges in imports.items()
    }
    assert _cycles(graph) == []


def test_no_private_names_imported_from_another_module() -> None:
    modules = _modules()
    reaches = sorted(
        f"{name} imports {target}.{imported}"
        for name, edges in _imports(modules).items()
        for target, imported in edges
        if imported is not None and imported.startswith("_") and not imported.startswith("__")
    )
    assert reaches == []
