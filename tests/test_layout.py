"""The package's layout (docs/design.md): no import cycle, nothing outside ``cagelib.lab`` imports the lab,
and the training core imports without the plotting / widget / notebook libraries.

The import graph is read from the code (``ast``, every ``import`` statement, module level and inside
functions alike), not from a running interpreter, so a lazy import cannot hide an arrow.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cagelib"
CORE = ("cagelib.data", "cagelib.methods", "cagelib.pretrain", "cagelib.evaluate")
LAB_ONLY_LIBRARIES = ("plotly", "ipywidgets", "openTSNE", "papermill", "matplotlib", "IPython", "nbformat")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the cagelib modules it imports (a ``from package import name`` counts as the submodule
    ``package.name`` when that is a module, else as ``package``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "cagelib.methods.registry" in graph["cagelib.methods.cage"]
    assert "cagelib.pretrain.loop" in graph["cagelib.pretrain.distributed"]
    assert "cagelib.methods.augment" in graph["cagelib.lab.player"]


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


COMMAND_LINE = ("cagelib.cli", "cagelib.__main__")  # the top floor: the one command line runs the lab's jobs


def test_nothing_outside_the_lab_imports_the_lab():
    arrows = [f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
              if b.startswith("cagelib.lab") and not a.startswith(("cagelib.lab", *COMMAND_LINE))]
    assert arrows == []
    assert not [a for a, targets in import_graph().items() if set(targets) & set(COMMAND_LINE)
                and a not in COMMAND_LINE]  # nothing imports the command line


def test_a_cycle_and_an_upward_arrow_would_be_seen():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", CORE)
def test_the_core_imports_without_plotting_widgets_or_notebooks(package):
    code = (f"import sys, importlib, pkgutil\nimport {package} as p\n"
            "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'):\n    importlib.import_module(m.name)\n"
            f"print(sorted(k for k in sys.modules if k.split('.')[0] in {LAB_ONLY_LIBRARIES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{package} pulled in {out.strip()}"
    assert "cagelib.lab" not in subprocess.run(
        [sys.executable, "-c", f"import sys, {package}; print([k for k in sys.modules if k.startswith('cagelib')])"],
        capture_output=True, text=True, check=True).stdout
