"""The shape of the house (docs/architecture.md): no import cycle inside mdesc, no oversized file
or function, every exported name importable, plain imports outside the one lazy top level."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

# The package under test (the checkout's, or the installed wheel's in CI's second stage: its
# source is what users get); csrc/ where the checkout has it.
PACKAGE = Path(importlib.util.find_spec("mdesc").origin).parent
ROOT = PACKAGE.parent
CSRC = Path(__file__).resolve().parents[1] / "csrc"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
# The lazy top level (docs/architecture.md, "Imports") is the only module allowed a module
# __getattr__ registry, plus the Lightning callback, which keeps lightning an optional dependency.
LAZY_MODULES = {"mdesc", "mdesc.anyrun.lightning"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, current: str, level: int, is_package: bool) -> str:
    if level == 0:
        return name
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str, path: Path) -> set[str]:
    """mdesc modules that ``module`` imports (anywhere in it, except under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", module, node.level, path.name == "__init__.py")
            for alias in node.names:  # `from mdesc.core import cells` imports a module
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return {m for m in out if m in MODULES and m != module}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_inside_mdesc():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    saved = {k: set(v) for k, v in GRAPH.items()}
    try:
        GRAPH["mdesc.store"].add("mdesc.options")
        GRAPH["mdesc.options"].add("mdesc.store")
        assert _cycle() is not None
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def _source_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path
    for path in sorted(CSRC.rglob("*")):
        if path.suffix in (".h", ".cpp", ".cu", ".cuh"):
            yield path


def test_no_file_over_the_limit():
    long = {p.as_posix().split("/mdesc/", 1)[-1] if p.is_relative_to(PACKAGE) else p.name: n
            for p in _source_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_function_over_the_limit():
    long = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{module}.{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_only_the_top_level_is_lazy():
    lazy = set()
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
            lazy.add(module)
    assert lazy <= LAZY_MODULES, f"module __getattr__ registries outside the top level: {lazy - LAZY_MODULES}"


@pytest.mark.parametrize("name", [m for m in MODULES if not m.endswith("__main__")])
def test_every_exported_name_imports(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:  # an optional dependency this install lacks
        if e.name and not e.name.startswith("mdesc"):
            pytest.skip(f"{name} needs {e.name}")
        raise
    for exported in getattr(module, "__all__", ()):
        assert hasattr(module, exported), f"{name}.__all__ lists {exported!r}, which it does not define"
    namespace: dict = {}
    exec(f"from {name} import *", namespace)  # noqa: S102
