"""The import graph of engine sub-packages, lazy (function-level) imports included, and its cycles.

Python only runs into an import loop when a lazy import happens to execute at the wrong moment, so the
interpreter cannot be asked: the graph is read from the source with `ast`. Only relative imports (and
absolute ones naming the package) count; third-party modules are not part of any loop of ours."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_files(packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file for every module of the given packages (e.g. `lorascripts.caption`)."""
    modules: dict[str, Path] = {}
    for package in packages:
        folder = REPO / package.replace(".", "/")
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def in_packages(module: str, packages: Iterable[str]) -> bool:
    """True when `module` is one of `packages` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name an ImportFrom's `from X` part refers to, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `module` imports anywhere in its file (top level or inside functions)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, path.name == "__init__.py", node)
            # `from .pkg import mod` imports the sub-module, `from .mod import name` the module itself
            subs = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(subs or {target})
    return (found & known) - {module}


def import_graph(packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules it imports, restricted to the modules of `packages`."""
    files = module_files(packages)
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (each one holds at least one import loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graphs are a few hundred nodes, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups
