"""The AST import graph of a set of packages, and its cycles (used by ``test_import_graph``).

See ``tests/unit/test_import_graph.py`` for what counts as an edge and why.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

Graph = dict[str, set[str]]

_CALLABLE_PATH = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*")
_IMPORT_FUNCTIONS = {"import_module", "__import__"}


# --- the graph --------------------------------------------------------------------------------


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under each package folder of ``root``."""
    modules: dict[str, Path] = {}
    for package in packages:
        folder = root / package
        if not (folder / "__init__.py").is_file():
            continue
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """Each project module -> the project modules it imports (see the module docstring)."""
    modules = project_modules(root, packages)
    graph: Graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        named = _named_modules(tree, name, is_package, modules)
        graph[name] = {target for target in named if target != name}
    return graph


def _named_modules(
    tree: ast.AST, module: str, is_package: bool, modules: Mapping[str, Path]
) -> Iterator[str]:
    package = module if is_package else module.rpartition(".")[0]
    # A module that imports a name it computes may take that name from any string it holds.
    dynamic = any(
        isinstance(node, ast.Call) and _is_import_call(node) and _import_call_target(
            node, package) is None
        for node in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            if base is None:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if alias.name != "*" and submodule in modules:
                    yield submodule
                else:
                    yield from _known(base, modules)
        elif isinstance(node, ast.Call) and _is_import_call(node):
            target = _import_call_target(node, package)
            if target is not None:
                yield from _known(target, modules)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _CALLABLE_PATH.fullmatch(node.value)
            if match:
                yield from _known(match.group(1), modules)
            elif dynamic and node.value in modules:
                yield node.value


def _known(dotted: str, modules: Mapping[str, Path]) -> Iterator[str]:
    """The longest prefix of ``dotted`` that is a project module, if any."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            yield candidate
            return


def _absolute(name: str, level: int, package: str) -> str | None:
    if level == 0:
        return name
    base = package.split(".") if package else []
    if level - 1 > len(base):
        return None
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base) or None


def _is_import_call(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in _IMPORT_FUNCTIONS


def _import_call_target(node: ast.Call, package: str) -> str | None:
    if not node.args:
        return None
    first = node.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    name = first.value
    if not name.startswith("."):
        return name
    anchor: str | None = None
    for keyword in node.keywords:
        value = keyword.value
        if keyword.arg == "package":
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                anchor = value.value
            elif isinstance(value, ast.Name) and value.id in ("__package__", "__name__"):
                anchor = package
    if anchor is None:
        return None
    level = len(name) - len(name.lstrip("."))
    return _absolute(name.lstrip("."), level, anchor)


# --- cycles -----------------------------------------------------------------------------------


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Cycles covering every edge that lies on one, each as ``[a, b, ..., a]``.

    For each edge ``u -> v`` inside a strongly connected component, the shortest path back from
    ``v`` to ``u`` closes a cycle; cycles are rotated to start at their smallest module and
    listed once, sorted.
    """
    edges = {node: sorted(set(targets) & set(graph)) for node, targets in graph.items()}
    found: set[tuple[str, ...]] = set()
    for component in _components(edges):
        members = set(component)
        for source in sorted(members):
            for target in edges[source]:
                if target not in members:
                    continue
                back = _shortest_path(edges, target, source, members)
                if back is not None:
                    found.add(_rotated([source, *back[:-1]]))
    return [[*cycle, cycle[0]] for cycle in sorted(found)]


def _components(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle in them (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if position < len(targets):
                work.append((node, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    result.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _shortest_path(
    edges: Mapping[str, Sequence[str]], start: str, goal: str, within: set[str]
) -> list[str] | None:
    """``[start, ..., goal]`` by breadth-first search inside ``within``."""
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            if node == goal:
                path = [node]
                while (step := previous[path[-1]]) is not None:
                    path.append(step)
                return path[::-1]
            for target in edges[node]:
                if target in within and target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    return None


def _rotated(cycle: list[str]) -> tuple[str, ...]:
    first = cycle.index(min(cycle))
    return tuple(cycle[first:] + cycle[:first])


def describe(cycles: Iterable[Sequence[str]]) -> str:
    return "\n".join(" → ".join(cycle) for cycle in cycles)
