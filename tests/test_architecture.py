"""The package's structure: imports go one way, between layers and between modules,
and no private JAX.

The import graph is read from the source (AST), imports inside functions included,
so that a cycle hidden by a function-local import is found too. Its nodes are the
modules by dotted path inside the package (`_backward._sweep`); importing a
subpackage's face (`from .._forward import integrate`) is an edge to that
subpackage's `__init__`.
"""

import ast
from pathlib import Path

import jadjoint

PACKAGE = Path(jadjoint.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

# The layers of `docs/how-it-works.md`, lowest first: a module imports only from its
# own layer and those below.
LAYERS = [
    {
        "_results",
        "_errors",
        "_options",
        "_inputs",
        "_differentiation_mode",
        "_solvers",
    },
    {"_numerics"},
    {"_problem"},
    {"_forward"},
    {"_backward"},
    {"_adjoint"},
    {"_events"},
    {"_validation", "_solve", "_odeint", "_check_grad", "_hvp", "__init__"},
]


def module_name(path: Path) -> str:
    """`_backward._sweep` for `jadjoint/_backward/_sweep.py`; `_backward` for its
    `__init__.py`; `__init__` for the package's own."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def package_of(name: str) -> list[str]:
    """The package a module's relative imports start from."""
    path = PACKAGE / Path(*name.split("."))
    parts = name.split(".")
    return parts if (path / "__init__.py").exists() else parts[:-1]


def resolve(name: str, level: int, module: str | None, alias: str) -> str:
    """The module that `from {'.' * level}{module} import {alias}` in `name` reads."""
    base = package_of(name)[: len(package_of(name)) - (level - 1)]
    target = base + (module.split(".") if module else [])
    candidate = target + [alias]
    as_module = PACKAGE / Path(*candidate)
    if as_module.with_suffix(".py").exists() or (as_module / "__init__.py").exists():
        return ".".join(candidate)
    return ".".join(target) or "__init__"


def local_imports(path: Path) -> set[str]:
    """The modules of the package that `path` imports, anywhere in it."""
    name = module_name(path)
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            for alias in node.names:
                imported.add(resolve(name, node.level, node.module, alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("jadjoint."):
                imported.add(node.module.removeprefix("jadjoint."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jadjoint."):
                    imported.add(alias.name.removeprefix("jadjoint."))
    return imported - {name}


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): local_imports(path) for path in MODULES}


def layer(name: str) -> int:
    top = name.split(".")[0]
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS")


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


def test_the_graph_reads_subpackages_and_their_faces():
    graph = import_graph()
    assert "_forward" in graph["_backward._sweep"]  # a face
    assert "_backward._diffrax_solves" in graph["_backward._sweep"]  # a sibling
    assert "_numerics" in graph["_backward._along_steps"]
    assert layer("_forward._integrate") < layer("_backward._sweep")


def test_imports_go_one_way():
    graph = import_graph()
    assert set(graph["_solve"]) - {"__init__"}, "the graph was not read"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_layers_import_only_downwards():
    upward = {
        (source, target)
        for source, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(source)
    }
    assert upward == set()


def test_no_private_jax():
    for path in MODULES:
        assert "jax._src" not in path.read_text(), path.name
