"""The package's shape: running never imports deciding, no import cycles, a guarded surface.

Read from the source with ``ast``, so an import inside a function (loaded on first use)
counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from typing import Dict, Iterator, Set, Tuple

import autopar

PACKAGE = pathlib.Path(autopar.__file__).parent

# What the running layer may import: itself and the shared value modules.
RUNNING_MAY_IMPORT = ("autopar._execute", "autopar._config", "autopar.errors", "autopar.plan")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: pathlib.Path) -> Iterator[Tuple[str, bool]]:
    """(imported autopar module, whether only for type checking) for every import."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            typing_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # "from . import x" imports the submodule x where one exists.
            names = [
                f"{source}.{alias.name}"
                if (PACKAGE.parent / f"{source}.{alias.name}".replace(".", "/")).exists()
                or (PACKAGE.parent / (f"{source}.{alias.name}".replace(".", "/") + ".py")).exists()
                else source
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name == "autopar" or name.startswith("autopar."):
                yield name, id(node) in typing_only


def _graph(*, runtime_only: bool) -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        edges = graph.setdefault(_module_name(path), set())
        for name, typing in _imports(path):
            if not (runtime_only and typing):
                edges.add(name)
    return graph


def test_the_two_layers_exist_on_disk():
    assert (PACKAGE / "_auto" / "planner.py").is_file()
    assert (PACKAGE / "_execute" / "executor.py").is_file()
    assert (PACKAGE / "_execute" / "backends" / "base.py").is_file()


def test_running_never_imports_deciding():
    running = {
        m: e for m, e in _graph(runtime_only=False).items() if m.startswith("autopar._execute")
    }
    assert len(running) >= 10  # (the graph really was read)
    wrong = {
        (module, name)
        for module, edges in running.items()
        for name in edges
        if not name.startswith(RUNNING_MAY_IMPORT)
    }
    assert not wrong, f"the running layer imports beyond itself: {sorted(wrong)}"


def test_deciding_imports_running_but_not_the_wrappers_at_run_time():
    graph = _graph(runtime_only=True)
    deciding = {m: e for m, e in graph.items() if m.startswith("autopar._auto")}
    assert any(name.startswith("autopar._execute") for e in deciding.values() for name in e)
    above = ("autopar._router", "autopar._wrapper", "autopar.decorator", "autopar._async")
    wrong = {(m, n) for m, e in deciding.items() for n in e if n.startswith(above)}
    assert not wrong, f"deciding imports the layer above it: {sorted(wrong)}"


def test_no_import_cycles_at_run_time():
    graph = _graph(runtime_only=True)
    # A package imports its own __init__ first: edges to a parent package are not cycles.
    for module, edges in graph.items():
        edges.difference_update({n for n in edges if module.startswith(n + ".") or n == module})
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: Tuple[str, ...]) -> None:
        state[module] = 1
        for name in sorted(graph.get(module, ())):
            if state.get(name) == 1:
                cycle = (*path[path.index(name) :], name) if name in path else (module, name)
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if name in graph and state.get(name) is None:
                visit(name, (*path, name))
        state[module] = 2

    for module in sorted(graph):
        if state.get(module) is None:
            visit(module, (module,))


def test_dir_lists_the_public_names_and_each_resolves():
    assert dir(autopar) == sorted(autopar.__all__)
    for name in autopar.__all__:
        assert getattr(autopar, name) is not None, name
    assert not hasattr(autopar, "backends")  # kinds are chosen by name, not by class


def test_import_autopar_loads_neither_layer_nor_wrapt():
    code = (
        "import sys, autopar; "
        "print(sorted(m for m in sys.modules if m.startswith(('autopar.', 'wrapt'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
