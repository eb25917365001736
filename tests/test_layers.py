"""The package's layers point one way (DESIGN.md): data -> models -> train -> recipes -> eval / index / serve / cli,
with shared helpers (config, fileio, audio …) below them all; library code never imports a recipe, and no two
modules import each other, even through others."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "polyvox"
HELPERS = {"config", "fileio", "audio", "sysmem", "provenance", "progress", "losses", "polyvox", "__main__"}
MAY_NOT_IMPORT = {  # layer -> layers it must not import
    "data": {"models", "train", "recipes", "eval", "index", "serve", "cli"},
    "models": {"train", "recipes", "eval", "index", "serve", "cli"},
    "train": {"data", "models", "recipes", "eval", "index", "serve", "cli"},
    "eval": {"train", "recipes", "index", "serve", "cli"},
    "index": {"train", "recipes", "eval", "serve", "cli"},
    "serve": {"train", "recipes", "eval", "cli"},
    "recipes": {"index", "serve", "cli"},
}


def _imports() -> dict[str, set[str]]:
    """module -> polyvox modules it imports (anywhere in the file, functions included)."""
    graph = {}
    for f in SRC.rglob("*.py"):
        mod = ".".join(("polyvox", *f.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("polyvox"):
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("polyvox")}
        graph[mod] = found
    return {m: {d for d in deps if d in graph} - {m} for m, deps in graph.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "polyvox"


def test_layers_point_one_way() -> None:
    wrong = sorted(f"{m} imports {d}" for m, deps in _imports().items() for d in deps
                   if _layer(d) in MAY_NOT_IMPORT.get(_layer(m), set()))
    assert wrong == []
    assert set(MAY_NOT_IMPORT) | HELPERS >= {_layer(m) for m in _imports()} - {"cli"}


def test_no_import_cycles() -> None:
    graph = _imports()
    cycles = []
    for start in graph:  # depth-first search for a path back to `start`
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in graph[node]:
                if dep == start and not dep.startswith(f"{node}.") and not node.startswith(f"{dep}."):
                    cycles.append(" -> ".join([*path, dep]))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
    assert cycles == []


def test_own_modules_are_imported_at_the_top() -> None:
    """Inside functions only heavy optional libraries are imported. The exceptions: the command line, which imports
    each command's layers when it runs (``polyvox --help`` in 0.7 s instead of 6 s of torch and transformers), and
    ``polyvox.serve``'s lazy attributes (FastAPI is imported when the app is)."""
    late = []
    for f in SRC.rglob("*.py"):
        if f.name == "cli.py" or f.relative_to(SRC).as_posix() == "serve/__init__.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                late += [f"{f.relative_to(SRC)}:{n.lineno}" for n in ast.walk(node)
                         if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("polyvox")]
    assert late == []
