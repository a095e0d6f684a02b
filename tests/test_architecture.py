"""The package's one-way flow, checked from its source: instrumentation and
records never reach for outputs, the state sits below everything, and the
module-level import graph has no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import asynclens

PACKAGE = Path(asynclens.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool, type_checking: bool = False) -> set[str]:
    """The asynclens modules ``path`` imports (``TYPE_CHECKING`` blocks only if asked)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if not type_checking and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("asynclens"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module.startswith("asynclens"):
                    found.add(module)
                    found.update(f"{module}.{a.name}" for a in node.names)
            if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    visit(
                        [c for c in children if isinstance(c, ast.stmt)]
                        + [s for h in children if isinstance(h, ast.ExceptHandler) for s in h.body]
                    )

    visit(tree.body)
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


SOURCES = sorted(PACKAGE.rglob("*.py"))


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


@pytest.mark.parametrize(
    ("part", "forbidden"),
    [
        ("probes", {"sinks", "report", "pytest", "cli", "testing", "integrations"}),
        ("tracing", {"sinks", "report", "pytest", "cli", "testing", "probes", "session"}),
        ("records", {"*"}),
        ("stats", {"*"}),
        ("_state", {"*"}),
        ("_durations", {"*"}),
        ("_paths", {"*"}),
        ("_leaks", {"*"}),
        ("report", {"sinks", "pytest", "cli", "probes", "session"}),
        ("sinks", {"pytest", "cli", "probes", "session"}),
        ("attach", {"pytest", "cli", "integrations", "probes"}),
        ("live", {"pytest", "cli", "integrations", "attach"}),
    ],
)
def test_a_part_never_imports_what_lies_downstream(part: str, forbidden: set[str]) -> None:
    offending = []
    for path in SOURCES:
        module = _module_name(path)
        if _part(module) != part:
            continue
        for imported in _imports(path, top_level_only=False, type_checking="*" in forbidden):
            target = _part(imported)
            if target == part:
                continue
            if target == "probes" and imported.split(".")[2].startswith("_") and part == "tracing":
                continue  # the probes' shared patching tools serve tracing's executor patch too
            if target == "_native" and part != "_native":
                continue  # which implementation runs: it imports only the compiled module, so any part may ask
            if "*" in forbidden or target in forbidden:
                offending.append(f"{module} imports {imported}")
    assert offending == []


def test_the_module_level_import_graph_has_no_cycle() -> None:
    graph = {_module_name(p): _imports(p, top_level_only=True) for p in SOURCES}
    # a package's __init__ importing its own submodules is how re-exports work, not a cycle
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(module: str, path: list[str]) -> bool:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle.extend(path[path.index(target) :] + [module, target] if target in path else [module, target])
                return True
            if state.get(target) is None and visit(target, [*path, module]):
                return True
        state[module] = 2
        return False

    for module in sorted(graph):
        if state.get(module) is None and visit(module, []):
            break
    assert cycle == []


def test_importing_asynclens_loads_neither_pytest_nor_the_cli() -> None:
    code = (
        "import sys, asynclens, asynclens.sinks, asynclens.integrations.asgi;"
        "print(sorted(m for m in sys.modules if m == 'pytest' or m.startswith(('asynclens.pytest', 'asynclens.cli'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
