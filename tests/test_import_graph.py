"""The package's imports flow one way: no part of dcn_det imports one that imports it back."""
import ast
import os
from typing import Dict, List, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dcn_det")


def _unit_of(module: str) -> str:
    """``dcn_det.engine.trainer`` -> ``engine`` (a subpackage or a top-level module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> Dict[str, Set[str]]:
    """unit -> the other units it imports, from every import statement (function-level ones
    included) of every file below ``dcn_det/`` except the root ``__init__.py``."""
    graph: Dict[str, Set[str]] = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            if rel == "dcn_det.__init__":
                continue
            module = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
            package = module if name == "__init__.py" else module.rsplit(".", 1)[0]
            src = _unit_of(module)
            edges = graph.setdefault(src, set())
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                targets: List[str] = []
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")
                        base = base[:len(base) - node.level + 1]
                        target = ".".join(base + ([node.module] if node.module else []))
                    else:
                        target = node.module or ""
                    # ``from dcn_det import ops`` imports the unit ``ops``
                    targets = ([f"{target}.{a.name}" for a in node.names]
                               if target == "dcn_det" else [target])
                for t in targets:
                    if t.startswith("dcn_det.") and _unit_of(t) not in ("", src, "_C"):
                        edges.add(_unit_of(t))
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """A cycle ``[a, b, ..., a]`` of the graph, or ``[]``."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_package_imports_have_no_cycle():
    graph = import_graph()
    assert {"engine", "evaluation", "io", "modeling", "ops", "config", "data"} <= set(graph)
    cycle = find_cycle(graph)
    assert not cycle, "import cycle between parts of dcn_det: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_lower_layers_do_not_import_upper_ones():
    graph = import_graph()
    # the order of the layers that docs/DESIGN.md describes
    for low, high in [("ops", "modeling"), ("modeling", "engine"), ("io", "engine"),
                      ("evaluation", "engine"), ("config", "data"), ("data", "modeling"),
                      ("weights", "modeling")]:
        assert high not in graph.get(low, set()), f"{low} imports {high}"
