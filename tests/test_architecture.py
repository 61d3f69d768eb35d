"""The package's structure: imports go one way, modules stay small, no private JAX.

The import graph is read from the source (AST), imports inside functions included,
so that a cycle hidden by a function-local import is found too.
"""

import ast
from pathlib import Path

import jadjoint

PACKAGE = Path(jadjoint.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
MOST_LINES = 300


def local_imports(path: Path) -> set[str]:
    """The modules of the package that `path` imports, anywhere in it."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                imported.update(alias.name for alias in node.names)
            else:
                imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("jadjoint."):
                imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jadjoint."):
                    imported.add(alias.name.split(".")[1])
    return imported


def import_graph() -> dict[str, set[str]]:
    return {path.stem: local_imports(path) for path in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a path of modules, or `None` (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_hidden_cycle():
    """The check itself can fail: a cycle through three modules is found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    source = "def f():\n    from ._b import g\n"
    assert "_b" in {
        node.module for node in ast.walk(ast.parse(source)) if hasattr(node, "module")
    }


def test_imports_go_one_way():
    graph = import_graph()
    assert set(graph["_solve"]) - {"__init__"}, "the graph was not read"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_modules_are_small():
    sizes = {path.name: len(path.read_text().splitlines()) for path in MODULES}
    assert {name: n for name, n in sizes.items() if n > MOST_LINES} == {}


def test_no_private_jax():
    for path in MODULES:
        assert "jax._src" not in path.read_text(), path.name
